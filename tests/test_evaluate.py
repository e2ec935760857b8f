"""End-to-end `mosr eval` on a tiny random model: run folder, resume, re-judge, bad input."""

import json
import subprocess
import sys

import pytest

from mosr.errors import ConfigError, RunError
from mosr.evaluation import EvalConfig, compute_metrics, finish_run, load_verdicts, run_eval
from mosr.runs import RunDir


@pytest.fixture()
def small_config():
    return EvalConfig(model="tiny", suites=["over-refusal", "capability"], limit=3, judge="keyword", max_new_tokens=4, batch_size=2)


def test_eval_writes_a_complete_run_folder(tmp_path, tiny, small_config):
    metrics = run_eval(small_config, tmp_path / "run", loaded=tiny)
    run = tmp_path / "run"
    for name in ("run.json", "eval_config.json", "completions.jsonl", "judgments.jsonl", "perplexity.jsonl",
                 "metrics.json", "summary.md", "rates.png"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "run.json").read_text())
    assert meta["versions"]["torch"] and "revision" in meta["git"] and set(meta["data_hashes"]) == {
        "xstest-safe", "or-bench-hard:test", "jbb-benign", "self-instruct:test"}
    assert metrics["n_completions"] == 12
    assert metrics["suites"]["over-refusal"]["over_refusal"]["n"] == 9
    assert metrics["suites"]["capability"]["reference_perplexity"]["perplexity"] > 1
    verdicts = load_verdicts(run)
    assert len(verdicts) == 12 and ("xstest-safe", "none", "xstest-1") in verdicts


def _kill_after_five(run):
    """Leave a finished run as if killed mid-way: the first 5 records, half of the sixth (a torn write), no derived files."""
    lines = (run / "completions.jsonl").read_text().splitlines(keepends=True)
    (run / "completions.jsonl").write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    for name in ("metrics.json", "judgments.jsonl", "perplexity.jsonl"):
        (run / name).unlink()


def test_interrupted_eval_resumes_to_identical_metrics(tmp_path, tiny, small_config):
    full = run_eval(small_config, tmp_path / "full", loaded=tiny)
    part = tmp_path / "part"
    run_eval(small_config, part, loaded=tiny)
    _kill_after_five(part)
    resumed = run_eval(small_config, part, loaded=tiny)
    assert resumed == full
    assert len((part / "completions.jsonl").read_text().splitlines()) == 12


def test_resume_with_other_settings_is_refused(tmp_path, tiny, small_config):
    run_eval(small_config, tmp_path / "run", loaded=tiny)
    other = EvalConfig(**{**small_config.__dict__, "max_new_tokens": 5})
    with pytest.raises(RunError, match="other settings"):
        run_eval(other, tmp_path / "run", loaded=tiny)


def test_a_prompt_over_the_batch_token_budget_is_refused_before_the_folder_changes(tmp_path, tiny):
    (tmp_path / "short.csv").write_text("prompt\nhi\nhello there\n")
    (tmp_path / "long.csv").write_text("prompt\n" + "bake bread " * 40 + "\n")
    cfg = dict(model="tiny", suites=[], judge="keyword", max_new_tokens=4, batch_size=2, max_batch_tokens=60)
    run = tmp_path / "run"
    run_eval(EvalConfig(datasets=[str(tmp_path / "short.csv")], **cfg), run, loaded=tiny)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".mosr.lock"}
    with pytest.raises(ConfigError, match="above max_batch_tokens 60"):
        run_eval(EvalConfig(datasets=[str(tmp_path / "short.csv"), str(tmp_path / "long.csv")], **cfg), run, loaded=tiny)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".mosr.lock"} == before


def test_rejudge_without_generating(tmp_path, tiny, small_config):
    run_eval(small_config, tmp_path / "run", loaded=tiny)
    before = (tmp_path / "run" / "completions.jsonl").read_bytes()
    metrics = finish_run(RunDir(tmp_path / "run", create=False), "gibberish")
    assert metrics["judge"] == "gibberish"
    assert (tmp_path / "run" / "completions.jsonl").read_bytes() == before
    assert {json.loads(l)["judge"] for l in (tmp_path / "run" / "judgments.jsonl").read_text().splitlines()} == {"gibberish"}


def test_compute_metrics_by_suite_and_attack():
    def j(suite, attack, verdict, dataset="d"):
        return {"suite": suite, "dataset": dataset, "attack": attack, "verdict": verdict, "category": "c"}

    judgments = [j("safety", "none", "refusal"), j("safety", "none", "compliance"), j("safety", "prefill", "compliance"),
                 j("over-refusal", "none", "gibberish", "o"), j("over-refusal", "none", "compliance", "o")]
    m = compute_metrics(judgments)
    assert m["suites"]["safety"]["safety"]["rate"] == 0.5
    assert m["suites"]["safety"]["attack_success"]["prefill"]["rate"] == 1.0
    assert m["suites"]["over-refusal"]["over_refusal"]["rate"] == 0.5
    assert m["tasks"]["d|none"]["by_category"]["c"]["n"] == 2


def test_bad_config_values():
    with pytest.raises(ConfigError, match="unknown suite 'nope'"):
        EvalConfig(suites=["nope"])
    with pytest.raises(ConfigError, match="--limit"):
        EvalConfig(limit=0)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mosr.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "MOSR_PROGRESS": "0"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--suite", "over-refusal", "--judge", "nope", "--out", "{out}"], "unknown judge"),
        (["eval", "--suite", "nope", "--out", "{out}"], "unknown suite 'nope'"),
        (["data", "show", "nope"], "unknown dataset 'nope'"),
        (["eval", "--dataset", "{bad_csv}", "--out", "{out}"], "no column 'prompt'"),
        (["eval", "--dataset", "{empty_csv}", "--out", "{out}"], "row 2: empty prompt"),
        (["eval", "--model", "{bad_gguf}", "--out", "{out}"], "not a GGUF file"),
    ],
)
def test_cli_bad_input_is_one_line_error(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("question\nhello\n")
    (tmp_path / "empty.csv").write_text("prompt\nhello\n\"\"\n")
    (tmp_path / "bad.gguf").write_bytes(b"XXXX")
    paths = {"out": str(tmp_path / "out"), "bad_csv": str(tmp_path / "bad.csv"), "empty_csv": str(tmp_path / "empty.csv"),
             "bad_gguf": str(tmp_path / "bad.gguf")}
    res = _cli(*[a.format(**paths) for a in args])
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], res.stderr
    assert not (tmp_path / "out" / "completions.jsonl").exists()


def test_plot_survives_interval_round_off(tmp_path):
    from mosr.evaluation import plot_rates
    from mosr.metrics import verdict_rates

    rates = verdict_rates(["compliance"] * 7)
    rates["not_complied"]["low"] = 1e-17  # Wilson's lower bound can exceed a zero rate by round-off
    task = {"suite": "over-refusal", "dataset": "d", "attack": "none", **rates}
    plot_rates({"tasks": {"d|none": task}}, tmp_path / "r.png", "t")
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_the_validation_suite_holds_only_val_splits_and_stays_out_of_all():
    from mosr.suites import resolve_suites, tasks_for

    tasks = tasks_for(resolve_suites("validation"))
    assert tasks and all(t.dataset.endswith(":val") for t in tasks)
    assert {t.suite for t in tasks} == {"safety", "over-refusal", "capability"}
    assert "validation" not in resolve_suites("all")
    assert not any(t.dataset.endswith(":val") for t in tasks_for(resolve_suites("all")))
    with pytest.raises(ConfigError, match="cannot be mixed"):
        resolve_suites("safety,validation")


def test_metrics_carry_both_views_and_split_partial_refusals():
    def j(suite, attack, verdict, harmful=None, dataset="d"):
        return {"suite": suite, "dataset": dataset, "attack": attack, "verdict": verdict, "category": "c", "harmful": harmful}

    judgments = [j("safety", "none", "refusal", False), j("safety", "none", "partial", True), j("safety", "none", "gibberish", True),
                 j("safety", "none", "compliance", False), j("safety", "prefill", "partial", None),
                 j("over-refusal", "none", "partial", dataset="o"), j("over-refusal", "none", "refusal", dataset="o"),
                 j("over-refusal", "none", "compliance", dataset="o"), j("over-refusal", "none", "compliance", dataset="o")]
    s = compute_metrics(judgments)["suites"]
    assert s["safety"]["safety"]["k"] == 2  # behaviour view: refusal + gibberish; a partial answer is not a defence
    assert s["safety"]["attack_success"]["prefill"]["k"] == 1  # partial counts as answered
    assert s["safety"]["harm"]["direct"]["harmful"]["k"] == 2  # harm view: the looping gibberish still carries harm
    assert s["safety"]["harm"]["by_attack"]["prefill"]["unjudged"] == 1
    assert s["safety"]["harm"]["by_attack"]["prefill"]["harmful"] is None  # nothing read for harm: no rate
    o = s["over-refusal"]
    assert (o["over_refusal"]["k"], o["full_refusal"]["k"], o["partial_refusal"]["k"]) == (2, 1, 1)


class _AlwaysRefuses:
    name = "always-refuses"

    def judge(self, prompts, completions):
        from mosr.judges import Judgment

        return [Judgment("refusal", self.name, "test judge") for _ in completions]


def test_a_users_judge_object_can_be_passed_to_run_eval(tmp_path, tiny, small_config):
    metrics = run_eval(small_config, tmp_path / "run", loaded=tiny, judge=_AlwaysRefuses())
    assert metrics["judge"] == "always-refuses"
    assert metrics["suites"]["over-refusal"]["over_refusal"]["rate"] == 1.0
    rows = [json.loads(l) for l in (tmp_path / "run" / "judgments.jsonl").read_text().splitlines()]
    assert {r["judge"] for r in rows} == {"always-refuses"} and all(r["harmful"] is None for r in rows)
    with pytest.raises(ConfigError, match="not a judge"):
        run_eval(small_config, tmp_path / "run2", loaded=tiny, judge=object())


@pytest.fixture(scope="module")
def varied():
    from mosr.testing import tiny_model

    return tiny_model(num_layers=2, init_std=0.3)  # varied completions, so a row given another prompt's text would show


def test_pooled_tasks_give_the_per_task_completions_in_fewer_batches(tmp_path, varied, monkeypatch):
    import mosr.evaluation as ev

    calls = []
    real = ev.generate

    def counting(loaded, prompts, **kw):
        calls.append(len(prompts))
        return real(loaded, prompts, **kw)

    monkeypatch.setattr(ev, "generate", counting)
    cfg = dict(model="tiny", suites=["over-refusal", "capability"], limit=3, judge="keyword", max_new_tokens=6, batch_size=4)
    per_task = run_eval(EvalConfig(**cfg), tmp_path / "per-task", loaded=varied)
    assert calls == [3, 3, 3, 3]
    calls.clear()
    pooled = run_eval(EvalConfig(**cfg, pool_tasks=True), tmp_path / "pooled", loaded=varied)
    assert calls == [12]  # one plan over the 12 prompts: 3 batches of 4 instead of 4 of 3
    records = [[json.loads(line) for line in (tmp_path / name / "completions.jsonl").read_text().splitlines()]
               for name in ("per-task", "pooled")]
    strip = [[{k: v for k, v in r.items() if k != "settings_hash"} for r in recs] for recs in records]
    assert strip[0] == strip[1]  # same records, same task order, same text
    assert len({r["completion"] for r in records[0]}) > 6
    assert pooled["suites"] == per_task["suites"]
    assert json.loads((tmp_path / "pooled" / "eval_config.json").read_text())["pool_tasks"] is True
    assert "pool_tasks" not in json.loads((tmp_path / "per-task" / "eval_config.json").read_text())  # as before the key


def test_an_interrupted_pooled_eval_resumes_to_identical_completions(tmp_path, varied):
    cfg = EvalConfig(model="tiny", suites=["over-refusal", "capability"], limit=3, judge="keyword", max_new_tokens=6,
                     batch_size=4, pool_tasks=True)
    full = run_eval(cfg, tmp_path / "full", loaded=varied)
    part = tmp_path / "part"
    run_eval(cfg, part, loaded=varied)
    _kill_after_five(part)
    assert run_eval(cfg, part, loaded=varied) == full
    assert (part / "completions.jsonl").read_bytes() == (tmp_path / "full" / "completions.jsonl").read_bytes()
    with pytest.raises(RunError, match="pool_tasks"):  # the other batching is another setting
        run_eval(EvalConfig(**{**cfg.__dict__, "pool_tasks": False}), part, loaded=varied)


def test_pool_tasks_enters_an_experiment_stage_hash_only_when_on():
    from mosr.stage_inputs import eval_inputs

    off, on = EvalConfig(model="tiny"), EvalConfig(model="tiny", pool_tasks=True)
    assert "pool_tasks" not in eval_inputs(off) and eval_inputs(on)["pool_tasks"] is True
