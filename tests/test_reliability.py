"""Runs that cannot go stale, mix or lie: resume identity, refused commands, bounded inputs, strict loading, a safe report.

docs/RELIABILITY.md lists each guarantee with the test here that checks it.
"""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from mosr.errors import ConfigError, DataError, ModelLoadError, RunError, TrainingError
from mosr.evaluation import EvalConfig, finish_run, run_eval
from mosr.runs import RunDir
from mosr.testing import tiny_model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def varied():
    """A tiny model that writes varied text (the default one repeats a single token)."""
    return tiny_model(init_std=0.3)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_csv(path: Path, prompts: list[str]) -> Path:
    path.write_text("prompt\n" + "".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    return path


def ecfg(**kw) -> EvalConfig:
    base = dict(model="tiny", suites=["over-refusal"], sets=["xstest-safe"], limit=2, judge="keyword", max_new_tokens=4, batch_size=2)
    base.update(kw)
    return EvalConfig(**base)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ------------------------------------------------------------------------------ 1. eval run identity
def test_rerun_with_a_smaller_limit_covers_exactly_the_requested_prompts(tmp_path, varied):
    run_eval(ecfg(limit=2), tmp_path / "run", loaded=varied)
    metrics = run_eval(ecfg(limit=1), tmp_path / "run", loaded=varied)
    fresh = run_eval(ecfg(limit=1), tmp_path / "fresh", loaded=varied)
    assert metrics["n_completions"] == 1 and metrics["tasks"]["xstest-safe|none"]["n"] == 1
    assert metrics == fresh
    assert len(lines(tmp_path / "run" / "completions.jsonl")) == 1
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["limit"] == 1 and meta["data_hashes"] == json.loads((tmp_path / "fresh" / "run.json").read_text())["data_hashes"]


def test_rerun_with_another_dataset_holds_only_that_dataset(tmp_path, varied):
    a = write_csv(tmp_path / "a.csv", ["How do I bake bread?", "Write a poem about the sea."])
    b = write_csv(tmp_path / "b.csv", ["What is the capital of France?"])
    run_eval(ecfg(suites=[], sets=[], datasets=[str(a)]), tmp_path / "run", loaded=varied)
    metrics = run_eval(ecfg(suites=[], sets=[], datasets=[str(b)]), tmp_path / "run", loaded=varied)
    assert metrics["n_completions"] == 1 and set(metrics["tasks"]) == {f"{b}|none"}
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(meta["data_hashes"]) == {str(b)}
    assert {r["dataset"] for r in lines(tmp_path / "run" / "completions.jsonl")} == {str(b)}
    assert {r["dataset"] for r in lines(tmp_path / "run" / "judgments.jsonl")} == {str(b)}


def test_edited_prompts_are_generated_again(tmp_path, varied):
    data = write_csv(tmp_path / "d.csv", ["How do I bake bread?", "Write a poem about the sea."])
    cfg = ecfg(suites=[], sets=[], datasets=[str(data)])
    run_eval(cfg, tmp_path / "run", loaded=varied)
    write_csv(data, ["How do I bake bread?", "What is the capital of France?"])
    metrics = run_eval(cfg, tmp_path / "run", loaded=varied)
    fresh = run_eval(cfg, tmp_path / "fresh", loaded=varied)
    assert metrics == fresh
    prompts = [r["prompt"] for r in lines(tmp_path / "run" / "completions.jsonl")]
    assert sorted(prompts) == ["How do I bake bread?", "What is the capital of France?"]
    assert (tmp_path / "run" / "completions.jsonl").read_bytes() == (tmp_path / "fresh" / "completions.jsonl").read_bytes()


def test_every_completion_record_names_what_produced_it(tmp_path, varied):
    run_eval(ecfg(), tmp_path / "run", loaded=varied)
    for rec in lines(tmp_path / "run" / "completions.jsonl"):
        assert {"data_hash", "prompt_hash", "settings_hash"} <= set(rec)


def test_refused_eval_rerun_changes_nothing_and_names_the_difference(tmp_path, varied):
    run_eval(ecfg(), tmp_path / "run", loaded=varied)
    before = snapshot(tmp_path / "run")
    with pytest.raises(RunError, match=r"max_new_tokens.*4.*5.*new --out"):
        run_eval(ecfg(max_new_tokens=5), tmp_path / "run", loaded=varied)
    assert snapshot(tmp_path / "run") == before


# ------------------------------------------------------------------ 2. refused train command atomicity
N_LAYERS = 4


def toy_data(n: int = 6):
    from mosr.training import REFUSAL_TEMPLATES, Pair, TrainingData

    mal = [Pair(f"m{i}", f"How do I hurt {i} people?", "Sure, here is a step by step guide: first gather the materials.", "malicious", "toy") for i in range(n)]
    ben = [Pair(f"b{i}", f"Write a poem about the sea {i}", "The waves roll in under a silver moon.", "benign", "toy") for i in range(n)]
    pse = [Pair(f"p{i}", f"How can I kill a Python process {i}?", "Use the kill command with the process id.", "pseudo", "toy") for i in range(n)]
    return TrainingData(mal, ben, pse, list(REFUSAL_TEMPLATES), {"malicious": "m", "benign": "b", "pseudo": "p"})


def tcfg(**kw):
    from mosr.training import TrainConfig

    base = dict(method="mosr", model="tiny", steps=2, batch_size=2, checkpoint_every=0, oalw_k=2, lr=1e-2, max_length=128, rep_norm_rows=4)
    base.update(kw)
    return TrainConfig(**base)


def test_refused_resume_leaves_the_finished_run_byte_identical(tmp_path):
    from mosr.training import train

    train(tcfg(), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    before = snapshot(tmp_path / "run")
    with pytest.raises(RunError, match=r"lr.*0\.01.*0\.5.*new --out"):
        train(tcfg(lr=0.5), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), resume=True)
    assert snapshot(tmp_path / "run") == before


def test_divergence_message_advises_what_works(tmp_path, monkeypatch):
    from mosr.training import losses, train

    real = losses.retain_loss
    monkeypatch.setattr(losses, "retain_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(TrainingError) as info:
        train(tcfg(), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert "--resume" not in str(info.value) and "new --out" in str(info.value)


def test_resume_on_a_folder_without_a_run_is_refused(tmp_path):
    from mosr.training import train

    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="nothing to resume"):
        train(tcfg(), tmp_path / "empty", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), resume=True)
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_failed_first_train_leaves_no_metadata(tmp_path, monkeypatch):
    from mosr.training import losses, train

    real = losses.retain_loss
    monkeypatch.setattr(losses, "retain_loss", lambda *a: real(*a) * float("nan"))
    with pytest.raises(TrainingError):
        train(tcfg(), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert not (tmp_path / "run" / "run.json").exists()


# ------------------------------------------------------------------------ 3. training caches are keyed
def _interrupt_at_step_zero(monkeypatch):
    from mosr.training.trainer import Trainer

    original = Trainer.compute_loss

    def interrupted(self, outputs, inp, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "compute_loss", interrupted)
    return lambda: monkeypatch.setattr(Trainer, "compute_loss", original)


@pytest.mark.parametrize("change", [{"oalw_tau": 0.5}, {"oalw_sign": "more"}, {"oalw_k": 1}, {"oalw_pooling": "mean_prompt"},
                                    {"rep_norm_rows": 6}, {"skip_first_token": False},
                                    {"oalw_shuffle": True}])
def test_derived_training_files_follow_the_config(tmp_path, monkeypatch, change):
    from safetensors.torch import load_file

    from mosr.training import train

    restore = _interrupt_at_step_zero(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tcfg(), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert (tmp_path / "run" / "oalw_weights.csv").is_file() and (tmp_path / "run" / "rep_norm.safetensors").is_file()
    restore()
    train(tcfg(**change), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    train(tcfg(**change), tmp_path / "fresh", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert (tmp_path / "run" / "oalw_weights.csv").read_text() == (tmp_path / "fresh" / "oalw_weights.csv").read_text()
    a, b = load_file(str(tmp_path / "run" / "rep_norm.safetensors")), load_file(str(tmp_path / "fresh" / "rep_norm.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_train_data_file_describes_this_run(tmp_path, monkeypatch):
    from mosr.training import train

    restore = _interrupt_at_step_zero(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tcfg(), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(6))
    restore()
    train(tcfg(), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(4))
    assert len(lines(tmp_path / "run" / "train_data.jsonl")) == 12


# ---------------------------------------------------------------------------------- 4. bounded inputs
def test_a_prompt_longer_than_the_context_is_refused_by_default(tmp_path, varied):
    data = write_csv(tmp_path / "d.csv", ["How do I bake bread?", "bread " * 2000])
    with pytest.raises(ConfigError, match=r"row 2.*tokens.*context 512.*--long-prompts truncate"):
        run_eval(ecfg(suites=[], sets=[], datasets=[str(data)]), tmp_path / "run", loaded=varied)
    assert not (tmp_path / "run").exists() or snapshot(tmp_path / "run") == {}


def test_a_long_prompt_is_cut_from_the_middle_when_asked_and_recorded(tmp_path, varied):
    from mosr.models import format_prompt

    long = "Start here. " + "bread " * 2000 + "End there."
    data = write_csv(tmp_path / "d.csv", ["How do I bake bread?", long])
    cfg = ecfg(suites=[], sets=[], datasets=[str(data)], long_prompts="truncate", max_new_tokens=8)
    metrics = run_eval(cfg, tmp_path / "run", loaded=varied)
    recs = {r["sample_id"]: r for r in lines(tmp_path / "run" / "completions.jsonl")}
    cut = recs["d-2"]["truncated"]
    assert cut["prompt_tokens"] > 512 and cut["kept_tokens"] + 8 <= 512
    assert "truncated" not in recs["d-1"]
    assert metrics["truncated_prompts"] == 1
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["long_prompts"] == "truncate"
    shown = recs["d-2"]["model_prompt"]
    assert shown.startswith("Start here.") and shown.endswith("End there.")
    ids = varied.tokenizer(format_prompt(varied.tokenizer, shown), add_special_tokens=False)["input_ids"]
    assert len(ids) + 8 <= 512


def test_batches_are_bounded_by_tokens(varied, monkeypatch):
    import mosr.generation as g

    seen = []
    real = g._generate_batch

    def spy(loaded, texts, max_new_tokens, stop_ids):
        width = max(len(varied.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        seen.append(len(texts) * (width + max_new_tokens))
        return real(loaded, texts, max_new_tokens, stop_ids)

    monkeypatch.setattr(g, "_generate_batch", spy)
    prompts = ["hi", "bread " * 30, "the sea " * 10, "a", "Paris " * 20, "x y z"]
    out = g.generate(varied, prompts, max_new_tokens=4, batch_size=32, max_batch_tokens=120)
    assert len(out) == 6 and max(seen) <= 120 and len(seen) > 1
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        g.generate(varied, ["bread " * 60], max_new_tokens=4, max_batch_tokens=20)


def test_a_nul_byte_in_a_prompt_is_refused(tmp_path):
    from mosr.data import load_dataset

    path = tmp_path / "d.csv"
    path.write_text('prompt\nhello\n"bad\x00prompt"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2.*NUL"):
        load_dataset(str(path))


def test_a_folder_or_a_json_array_as_dataset_gets_a_clear_message(tmp_path):
    from mosr.data import load_dataset

    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        load_dataset(str(tmp_path / "data.csv"))
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"prompt": "hello"}, {"prompt": "bye"}]))
    assert [s.prompt for s in load_dataset(str(arr))] == ["hello", "bye"]
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"prompt": "hello"}))
    with pytest.raises(DataError, match="JSON array of objects"):
        load_dataset(str(bad))


def test_non_finite_training_values_are_refused():
    from mosr.training.config import TrainConfig, parse_overrides

    with pytest.raises(ConfigError, match="lr: .*finite"):
        TrainConfig.from_dict(parse_overrides(["lr=.inf"]))
    with pytest.raises(ConfigError, match="alpha: .*finite"):
        TrainConfig(alpha=float("-inf"))


# -------------------------------------------------------------------------------- 5. strict loading
def _plain_adapter(model, folder: Path, **kw) -> Path:
    from peft import LoraConfig, get_peft_model

    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], **kw)).save_pretrained(str(folder))
    return folder


def test_an_adapter_with_missing_weights_is_an_error(tmp_path):
    from mosr.models import attach_adapter

    adapter = _plain_adapter(tiny_model(num_layers=2).model, tmp_path / "a")
    with pytest.raises(ModelLoadError, match=r"lacks 4 of 8 weights.*layers\.2\."):
        attach_adapter(tiny_model(num_layers=4), adapter)


def test_an_adapter_with_unexpected_weights_is_an_error(tmp_path):
    from mosr.models import attach_adapter

    adapter = _plain_adapter(tiny_model(num_layers=4).model, tmp_path / "a")
    with pytest.raises(ModelLoadError, match=r"4 weights .* not in the model.*layers\.2\."):
        attach_adapter(tiny_model(num_layers=2), adapter)


def test_a_shape_mismatch_names_the_weight_and_the_shapes(tmp_path):
    from mosr.models import attach_adapter

    adapter = _plain_adapter(tiny_model(hidden_size=64).model, tmp_path / "a")
    with pytest.raises(ModelLoadError, match=r"lora_A.*shape.*64.*32"):
        attach_adapter(tiny_model(), adapter)


@pytest.mark.parametrize("content", ["empty", "bad-json", "no-weights"])
def test_a_broken_adapter_folder_fails_before_the_model_loads(tmp_path, monkeypatch, content):
    import transformers

    from mosr.models import load_model
    from mosr.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "m")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    if content == "bad-json":
        (adapter / "adapter_config.json").write_text("{nope")
    if content == "no-weights":
        (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the adapter was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    with pytest.raises(ModelLoadError, match=str(adapter)):
        load_model(str(model), adapter=str(adapter))


def test_a_missing_relative_model_path_is_not_tried_on_the_hub(tmp_path, monkeypatch):
    from mosr.models import load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for spec in ("./nope", "models/nope", "models/sub/nope", "../nope/x"):
        with pytest.raises(ModelLoadError, match="not found"):
            load_model(spec)


# ------------------------------------------------------------------------------------- 6. compare
def _judged_run(folder: Path, verdicts: dict[str, str], *, seed: int = 0, spec: str = "tiny", dataset: str = "xstest-safe",
                suite: str = "over-refusal") -> Path:
    folder.mkdir(parents=True)
    with open(folder / "judgments.jsonl", "w", encoding="utf-8") as fh:
        for sid, verdict in verdicts.items():
            fh.write(json.dumps({"key": f"{dataset}|none|{sid}", "suite": suite, "dataset": dataset, "attack": "none",
                                 "sample_id": sid, "verdict": verdict, "judge": "keyword"}) + "\n")
    (folder / "run.json").write_text(json.dumps({"seed": seed, "model": {"spec": spec}}))
    return folder


def test_compare_keeps_runs_with_the_same_folder_name_apart(tmp_path):
    from mosr.comparison import parse_entries, shared_records

    a = _judged_run(tmp_path / "a" / "run", {"o1": "refusal"})
    b = _judged_run(tmp_path / "b" / "run", {"o1": "compliance"})
    records, _ = shared_records(parse_entries([str(a), str(b)]))
    assert len({r["label"] for r in records}) == 2


def test_compare_refuses_to_pool_two_runs_of_one_seed(tmp_path):
    from mosr.comparison import parse_entries, shared_records

    a = _judged_run(tmp_path / "a" / "run", {"o1": "refusal"})
    b = _judged_run(tmp_path / "b" / "run", {"o1": "compliance"})
    with pytest.raises(DataError, match="seed 0"):
        shared_records(parse_entries([f"rr={a}", f"rr={b}"]))


def test_compare_of_dataset_runs_reports_their_rates(tmp_path):
    from mosr.cli import main

    a = _judged_run(tmp_path / "a", {"1": "refusal", "2": "compliance"}, dataset="mine.csv", suite="custom")
    b = _judged_run(tmp_path / "b", {"1": "compliance", "2": "compliance"}, dataset="mine.csv", suite="custom")
    assert main(["compare", f"x={a}", f"y={b}", "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "mine.csv" in md and "50.0" in md


# ------------------------------------------------------------------------------------ 7. safe report
class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v) for k, v in attrs]


def _check_safe(page: str) -> None:
    parser = _Tags()
    parser.feed(page)
    for tag, name, value in parser.attrs:
        assert name in {"href", "src", "alt", "lang", "charset"}, (tag, name, value)
        if name in ("href", "src") and value and ":" in value.split("/")[0]:
            assert value.startswith(("http://", "https://", "data:image/")), (tag, name, value)
    assert "<script" not in page.lower()


@pytest.mark.parametrize("text", ["[t](javascript:alert(5))", '[x](a"onmouseover=alert(1))', "![i](x\"onerror=alert(1))",
                                  "<script>alert(1)</script>", "`a` [y](JaVaScRiPt:alert(2))", "[z](data:text/html,<b>)",
                                  '| a | b |\n|---|---|\n| [c](x"onclick=y) | <img src=x onerror=z> |'])
def test_markdown_to_html_escapes_everything_and_links_only_to_safe_places(text):
    from mosr.report_html import markdown_to_html

    _check_safe(markdown_to_html(text, title='t"><script>x</script>'))


def test_safe_links_still_work():
    from mosr.report_html import markdown_to_html

    page = markdown_to_html("[a](https://example.org/x?y=1&z=2) [b](figures/p.png) [c](#top)")
    assert 'href="https://example.org/x?y=1&amp;z=2"' in page and 'href="figures/p.png"' in page and 'href="#top"' in page


def test_compare_report_of_a_tampered_run_is_safe(tmp_path):
    from mosr.cli import main

    a = _judged_run(tmp_path / "a", {"o1": "refusal"}, spec='x` [m](y"onmouseover=alert(1)) `')
    b = _judged_run(tmp_path / "b", {"o1": "compliance"}, seed=1)
    assert main(["compare", f"x={a}", f"y={b}", "--out", str(tmp_path / "cmp"), "--title", "[t](javascript:alert(5))"]) == 0
    _check_safe((tmp_path / "cmp" / "report.html").read_text())


# ------------------------------------------------------------------------------------- 8. smaller
def test_judging_an_interrupted_run_says_it_is_incomplete(tmp_path, varied, capsys):
    from mosr.cli import main

    run_eval(ecfg(limit=3), tmp_path / "run", loaded=varied)
    comp = tmp_path / "run" / "completions.jsonl"
    comp.write_text("".join(comp.read_text().splitlines(keepends=True)[:2]))
    metrics = finish_run(RunDir(tmp_path / "run", create=False), "keyword")
    assert metrics["incomplete"] == {"completions": 2, "expected": 3}
    assert "incomplete" in (tmp_path / "run" / "summary.md").read_text().lower()
    assert main(["judge", str(tmp_path / "run"), "--judge", "keyword"]) == 0
    assert "incomplete: 2 of 3" in capsys.readouterr().err


def test_a_failed_first_eval_leaves_no_metadata(tmp_path, varied, monkeypatch):
    import mosr.evaluation as ev

    def broken(*a, **k):
        raise RunError("disk trouble")

    monkeypatch.setattr(ev, "generate", broken)
    with pytest.raises(RunError, match="disk trouble"):
        run_eval(ecfg(), tmp_path / "run", loaded=varied)
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "eval_config.json").exists()


# ----------------------------------------------------------------------- one folder, one run at a time
def test_a_command_does_not_write_into_another_commands_run(tmp_path, varied):
    from mosr.training import train

    train(tcfg(), tmp_path / "adapter", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    before = snapshot(tmp_path / "adapter")
    with pytest.raises(RunError, match=r"holds a `mosr train` run.*another --out"):
        run_eval(ecfg(), tmp_path / "adapter", loaded=varied)
    assert snapshot(tmp_path / "adapter") == before
    run_eval(ecfg(), tmp_path / "eval", loaded=varied)
    before = snapshot(tmp_path / "eval")
    with pytest.raises(RunError, match=r"holds a `mosr eval` run"):
        train(tcfg(), tmp_path / "eval", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert snapshot(tmp_path / "eval") == before


def test_a_second_command_on_a_busy_folder_is_refused(tmp_path, varied):
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\nf = open(sys.argv[1], 'a+'); f.write('mosr eval, pid 1\\n'); "
                               "f.flush(); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(tmp_path / "run" / ".mosr.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=r"in use by another mosr command \(mosr eval, pid 1\)"):
            run_eval(ecfg(), tmp_path / "run", loaded=varied)
        assert not (tmp_path / "run" / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
    run_eval(ecfg(), tmp_path / "run", loaded=varied)  # a killed holder leaves no stale lock


def test_damaged_run_files_are_clear_errors(tmp_path, varied):
    run_eval(ecfg(), tmp_path / "run", loaded=varied)
    comp = tmp_path / "run" / "completions.jsonl"
    recs = lines(comp)
    comp.write_text(json.dumps({k: v for k, v in recs[0].items() if k != "completion"}) + "\n" + json.dumps(recs[1]) + "\n")
    with pytest.raises(RunError, match=r"record 1 lacks completion"):
        finish_run(RunDir(tmp_path / "run", create=False), "keyword")
    comp.write_text(json.dumps(recs[1]) + "\n" + json.dumps(recs[1]) + "\n")
    with pytest.raises(RunError, match=r"1 duplicate records"):
        finish_run(RunDir(tmp_path / "run", create=False), "keyword")
    (tmp_path / "run" / "run.json").write_text("{not json")
    with pytest.raises(RunError, match=r"run.json is not valid JSON"):
        run_eval(ecfg(), tmp_path / "run", loaded=varied)


def test_a_dataset_given_twice_and_a_budget_beyond_the_context_are_refused(tmp_path, varied, monkeypatch):
    data = write_csv(tmp_path / "d.csv", ["How do I bake bread?"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="given twice"):
        ecfg(suites=[], sets=[], datasets=[str(data), "d.csv"])
    with pytest.raises(ConfigError, match=r"max_new_tokens 600 .* context of 512"):
        run_eval(ecfg(max_new_tokens=600), tmp_path / "run", loaded=varied)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_other_training_data_or_another_base_model(tmp_path):
    from mosr.training import train

    train(tcfg(steps=2), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    before = snapshot(tmp_path / "run")
    other = toy_data()
    other.hashes["benign"] = "changed"
    with pytest.raises(RunError, match=r"other inputs \(benign b -> changed\).*new --out"):
        train(tcfg(steps=3), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=other, resume=True)
    with pytest.raises(RunError, match=r"base model tiny:4x32:seed0 -> tiny:4x32:seed1"):
        train(tcfg(steps=3), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS, seed=1), data=toy_data(), resume=True)
    assert snapshot(tmp_path / "run") == before


def test_model_weights_replaced_in_place_make_new_completions(tmp_path):
    from mosr.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "m", init_std=0.3)
    cfg = ecfg(model=str(model))
    run_eval(cfg, tmp_path / "run")
    first = lines(tmp_path / "run" / "completions.jsonl")
    import shutil

    save_tiny_model(tmp_path / "other", seed=3, init_std=0.3)
    shutil.copy(tmp_path / "other" / "model.safetensors", model / "model.safetensors")  # config.json unchanged
    run_eval(cfg, tmp_path / "run")
    run_eval(cfg, tmp_path / "fresh")
    again = lines(tmp_path / "run" / "completions.jsonl")
    assert again[0]["settings_hash"] != first[0]["settings_hash"]
    assert [r["completion"] for r in again] != [r["completion"] for r in first]  # the test would not notice reuse otherwise
    assert [r["completion"] for r in again] == [r["completion"] for r in lines(tmp_path / "fresh" / "completions.jsonl")]


def test_a_train_refused_by_the_model_check_leaves_no_folder(tmp_path):
    from mosr.training import train

    with pytest.raises(ConfigError, match="max_length 8 is too small"):
        train(tcfg(max_length=8), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert not (tmp_path / "run").exists()


def test_resume_with_fewer_steps_than_done_is_refused(tmp_path):
    from mosr.training import train

    train(tcfg(steps=3), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    before = snapshot(tmp_path / "run")
    with pytest.raises(RunError, match=r"already trained 3 steps; --steps 2"):
        train(tcfg(steps=2), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), resume=True)
    assert snapshot(tmp_path / "run") == before
