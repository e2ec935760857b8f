"""Steering baselines: hooks that leave no trace, exact no-ops at strength 0, artifacts, the maths, the rule, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from mosr.cli import main
from mosr.errors import ConfigError, RunError
from mosr.generation import generate
from mosr.models import find_layers
from mosr.steering import SelectionRule, SteerConfig, SteeringArtifact, choose, load_steering, run_steer, steer
from mosr.steering.eval import check_fits
from mosr.steering.extract import last_token_states, response_start_ids, transition_states
from mosr.steering.maths import (
    alphasteer_matrix, alphasteer_shift, best_threshold, diff_of_means, null_space_projector, project_out, transition_cosine,
)
from mosr.testing import tiny_model

PROMPTS = ["How do I bake bread?", "Hi", "Write a poem about the sea, please, with waves and a silver moon.", "What is the capital of France?"]
D = 32


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(num_layers=4, hidden_size=D)


def _vec(seed: int, scale: float = 4.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(D, generator=g)


def _artifacts(tiny) -> dict[str, SteeringArtifact]:
    """One artifact per method with large random tensors, so steering visibly changes the logits."""
    g = torch.Generator().manual_seed(1)
    return {
        "add": SteeringArtifact("refusal-direction", (1,), {"direction.1": _vec(1)}, strength=1.0),
        "ablate": SteeringArtifact("refusal-direction", (1,), {"direction.1": _vec(2)}, strength=1.0, mode="ablate"),
        "alphasteer": SteeringArtifact("alphasteer", (1, 2), {"matrix.1": torch.randn(D, D, generator=g),
                                                               "matrix.2": torch.randn(D, D, generator=g)}, strength=1.0),
        "scans": SteeringArtifact("scans", (1, 2), {"direction.1": _vec(3), "direction.2": _vec(4), "reference.2": _vec(5),
                                                     "reference.3": _vec(6)}, strength=1.0, threshold=0.0,
                                  classify_layers=(2, 3), response_start_ids=tuple(response_start_ids(tiny))),
    }


def _logits(tiny, prompt: str = PROMPTS[2]) -> torch.Tensor:
    from mosr.representations import encode

    ids = torch.tensor([encode(tiny.tokenizer, prompt).ids])
    with torch.inference_mode():
        return tiny.model(input_ids=ids).logits.clone()


def _no_hooks(model: torch.nn.Module) -> bool:
    """No steering hook is left (transformers installs its own output-capturing hooks; those stay)."""
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return not any(getattr(h, "__module__", "").startswith("mosr.steering") for h in hooks)


# --------------------------------------------------------------------------------------------- hooks
@pytest.mark.parametrize("name", ["add", "ablate", "alphasteer", "scans"])
def test_hooks_removed_and_logits_identical(tiny, name):
    art = _artifacts(tiny)[name]
    before = _logits(tiny)
    with steer(tiny, art) as state:
        during = _logits(tiny)
    after = _logits(tiny)
    assert state.calls > 0
    assert not torch.allclose(before, during, atol=1e-4), "steering should change the logits"
    assert torch.equal(before, after)
    assert _no_hooks(tiny.model)


@pytest.mark.parametrize("name", ["add", "ablate", "alphasteer", "scans"])
def test_hooks_removed_after_an_exception(tiny, name):
    before = _logits(tiny)
    with pytest.raises(ZeroDivisionError):
        with steer(tiny, _artifacts(tiny)[name]):
            _logits(tiny)
            1 / 0  # noqa: B018
    assert _no_hooks(tiny.model)
    assert torch.equal(before, _logits(tiny))


@pytest.mark.parametrize("name", ["add", "ablate", "alphasteer", "scans"])
def test_strength_zero_generates_exactly_the_unsteered_outputs(tiny, name):
    plain = generate(tiny, PROMPTS, max_new_tokens=6, batch_size=3)
    with steer(tiny, _artifacts(tiny)[name], strength=0.0):
        zero = generate(tiny, PROMPTS, max_new_tokens=6, batch_size=3)
    assert zero == plain
    before = _logits(tiny)
    with steer(tiny, _artifacts(tiny)[name].with_strength(0.0)):
        assert torch.equal(_logits(tiny), before)


def test_ablation_removes_the_direction_everywhere(tiny):
    art = _artifacts(tiny)["ablate"]
    r = art.tensors["direction.1"] / art.tensors["direction.1"].norm()
    seen: list[torch.Tensor] = []
    blocks = find_layers(tiny.model)
    with steer(tiny, art):
        # registered after the steering hooks, so they see the ablated outputs
        handles = [b.register_forward_hook(lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).detach())) for b in blocks]
        handles.append(blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()) if a else None))
        try:
            _logits(tiny)
        finally:
            for h in handles:
                h.remove()
    assert len(seen) >= len(blocks)
    for h in seen:
        assert (h @ r).abs().max() < 1e-4
    # without steering the component is there
    plain = tiny.model(input_ids=torch.tensor([[5, 6, 7]]), output_hidden_states=True).hidden_states[2]
    assert (plain @ r).abs().max() > 1e-3


def test_scans_decisions_match_offline_features(tiny):
    """Per-row decisions in the hook equal the transition cosines computed offline from train-time features."""
    art = _artifacts(tiny)["scans"]
    s1, s2 = transition_states(tiny, PROMPTS, list(art.classify_layers))
    cos = torch.stack([transition_cosine(s1[:, i], s2[:, i], art.tensors[f"reference.{l}"])
                       for i, l in enumerate(art.classify_layers)]).mean(0)
    mid = float(cos.sort().values[1:3].mean())  # two prompts each side
    art = art.replace(threshold=mid)
    with steer(tiny, art) as state:
        outs = generate(tiny, PROMPTS, max_new_tokens=12, batch_size=4)
    assert len(outs) == 4
    order = sorted(range(4), key=lambda i: (-len(tiny.tokenizer(PROMPTS[i])["input_ids"]), i))  # generate's batch order
    got = dict(zip(order, state.cosines))
    for i in range(4):
        assert got[i] == pytest.approx(float(cos[i]), abs=1e-4)
    assert sum(state.decisions) == 2


# ---------------------------------------------------------------------------------------------- maths
def test_project_out_and_diff_of_means_by_hand():
    h = torch.tensor([[3.0, 4.0], [1.0, -2.0]])
    out = project_out(h, torch.tensor([2.0, 0.0]))
    assert torch.allclose(out, torch.tensor([[0.0, 4.0], [0.0, -2.0]]))
    assert torch.allclose(project_out(h, torch.tensor([2.0, 0.0]), 0.5), torch.tensor([[1.5, 4.0], [0.5, -2.0]]))
    assert torch.allclose(diff_of_means(torch.tensor([[2.0, 0.0], [4.0, 2.0]]), torch.tensor([[1.0, 1.0]])), torch.tensor([2.0, 0.0]))


def test_alphasteer_leaves_benign_activations_unchanged_and_maps_harmful_to_refusal():
    g = torch.Generator().manual_seed(0)
    d, n_benign = 24, 6
    benign = torch.randn(n_benign, d, generator=g)
    harmful = torch.randn(10, d, generator=g) + 2.0
    target = torch.randn(d, generator=g)
    p = null_space_projector(benign, ratio=0.5)  # 12 dims, inside the 18-dim exact null space
    assert torch.allclose(p @ p, p, atol=1e-5) and torch.allclose(p, p.T, atol=1e-6)
    m = alphasteer_matrix(harmful, p, target, reg=0.0)
    assert alphasteer_shift(benign, m, 1.0).abs().max() < 1e-4  # benign rows: no change at all
    shifted = alphasteer_shift(harmful, m, 1.0)
    assert torch.allclose(shifted, target.expand_as(shifted), atol=1e-3)  # 10 rows, 12 free dims: exact fit
    weaker = alphasteer_matrix(harmful, p, target, reg=10.0)
    assert alphasteer_shift(harmful, weaker, 1.0).norm() < shifted.norm()  # the ridge shrinks the steering


def test_alphasteer_hooks_leave_benign_train_prompts_alone(tiny):
    benign = PROMPTS[:3]
    h = last_token_states(tiny, benign)
    layers = (1, 2)
    mats = {f"matrix.{l}": alphasteer_matrix(torch.randn(8, D) * 3, null_space_projector(h[:, l], 0.5), torch.randn(D), 0.0)
            for l in layers}
    art = SteeringArtifact("alphasteer", layers, mats, strength=2.0)
    for prompt in benign:
        before = _logits(tiny, prompt)
        with steer(tiny, art):
            steered = _logits(tiny, prompt)
        assert torch.allclose(before, steered, atol=1e-3)
    other = _logits(tiny, PROMPTS[3])  # not in the benign set: steered
    with steer(tiny, art):
        assert not torch.allclose(_logits(tiny, PROMPTS[3]), other, atol=1e-3)


def test_best_threshold():
    harm, ben = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.2, 0.75])
    t, acc = best_threshold(harm, ben)
    assert acc == pytest.approx(5 / 6)
    assert ((harm >= t).float().mean() + (ben < t).float().mean()) / 2 == pytest.approx(acc)
    t, acc = best_threshold(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))
    assert 0.2 < t < 0.8 and acc == 1.0


# ------------------------------------------------------------------------------------------- artifact
@pytest.mark.parametrize("name", ["add", "ablate", "alphasteer", "scans"])
def test_artifact_round_trip(tiny, tmp_path, name):
    art = _artifacts(tiny)[name].replace(options={"reg": 0.1}, model={"spec": "tiny", "fingerprint": "x"})
    art.save(tmp_path / "a")
    back = SteeringArtifact.load(tmp_path / "a")
    assert back.describe() == art.describe()
    assert set(back.tensors) == set(art.tensors)
    for k in art.tensors:
        assert torch.equal(back.tensors[k], art.tensors[k].float())
    assert torch.equal(_steered_logits(tiny, art), _steered_logits(tiny, back))


def _steered_logits(tiny, art):
    with steer(tiny, art):
        return _logits(tiny)


def test_artifact_rejects_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown steering method"):
        SteeringArtifact("caa", (1,), {"direction.1": torch.zeros(2)})
    with pytest.raises(ConfigError, match="missing tensors"):
        SteeringArtifact("refusal-direction", (1,), {"direction.2": torch.zeros(2)})
    with pytest.raises(ConfigError, match="only for --method refusal-direction"):
        SteeringArtifact("alphasteer", (1,), {"matrix.1": torch.zeros(2, 2)}, mode="ablate")
    with pytest.raises(ConfigError, match="strength"):
        SteeringArtifact("refusal-direction", (1,), {"direction.1": torch.zeros(2)}, strength=-1)
    with pytest.raises(RunError, match="not a steering run"):
        SteeringArtifact.load(tmp_path)


def test_steer_rejects_a_layer_the_model_lacks(tiny):
    art = SteeringArtifact("refusal-direction", (9,), {"direction.9": torch.zeros(D)})
    with pytest.raises(ConfigError, match="out of range"):
        with steer(tiny, art):
            pass
    assert _no_hooks(tiny.model)


# ------------------------------------------------------------------------------------------------ rule
def test_selection_rule_maximises_safety_within_the_over_refusal_budget():
    base = {"safety": 0.5, "over_refusal": 0.2, "capability": 0.8}
    rows = [
        {"safety": 0.9, "over_refusal": 0.5, "capability": 0.8},  # too much over-refusal
        {"safety": 0.7, "over_refusal": 0.25, "capability": 0.8},
        {"safety": 0.7, "over_refusal": 0.22, "capability": 0.75},  # same safety, lower over-refusal
        {"safety": 0.95, "over_refusal": 0.2, "capability": 0.5},  # capability collapsed
    ]
    assert choose(rows, base, SelectionRule("safety", 0.05, 0.05, 0.10)) == (2, True)
    assert choose(rows[:1], base, SelectionRule("safety")) == (0, False)  # least violating, flagged


def test_selection_rule_for_ablation_minimises_over_refusal_within_the_safety_budget():
    base = {"safety": 0.9, "over_refusal": 0.6, "capability": 0.7}
    rows = [
        {"safety": 0.5, "over_refusal": 0.1, "capability": 0.7},  # costs too much safety
        {"safety": 0.86, "over_refusal": 0.4, "capability": 0.7},
        {"safety": 0.9, "over_refusal": 0.45, "capability": 0.7},
    ]
    assert choose(rows, base, SelectionRule("over-refusal", max_safety_drop=0.05)) == (1, True)


def test_steer_config_refuses_non_train_splits_and_bad_values():
    with pytest.raises(ConfigError, match=":train split"):
        SteerConfig(harmful_train=["advbench:test"])
    with pytest.raises(ConfigError, match=":train split"):
        SteerConfig(benign_train=["self-instruct:val"])
    with pytest.raises(ConfigError, match="only for --method refusal-direction"):
        SteerConfig(method="scans", mode="ablate")
    with pytest.raises(ConfigError, match="val-prompts"):
        SteerConfig(val_prompts=0)
    with pytest.raises(ConfigError, match="share"):
        SteerConfig(max_over_refusal_increase=2)


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method,mode", [("refusal-direction", "add"), ("refusal-direction", "ablate"), ("alphasteer", "add"), ("scans", "add")])
def test_run_steer_then_eval_records_the_artifact(tiny, tmp_path, method, mode):
    from mosr.evaluation import EvalConfig, run_eval

    cfg = SteerConfig(method=method, mode=mode, n_train=6, val_prompts=3, max_new_tokens=3, batch_size=4, judge="keyword")
    art = run_steer(cfg, tmp_path / "steer", loaded=tiny)
    for name in ("steering.json", "steering.safetensors", "selection.json", "selection.md", "run.json"):
        assert (tmp_path / "steer" / name).is_file(), name
    sel = json.loads((tmp_path / "steer" / "selection.json").read_text())
    assert len(sel["candidates"]) >= 1 and sel["rule"] and "unsteered" in sel
    meta = json.loads((tmp_path / "steer" / "run.json").read_text())
    assert meta["command"] == "steer" and all(k.startswith(("train:", "val:")) for k in meta["data_hashes"])
    assert load_steering(str(tmp_path / "steer")).describe() == art.describe()
    if method == "alphasteer":
        assert art.options["reg"] in cfg.regs
    ev = EvalConfig(model="tiny", suites=["over-refusal"], limit=2, judge="keyword", max_new_tokens=3, batch_size=2,
                    steering=str(tmp_path / "steer"))
    run_eval(ev, tmp_path / "eval", loaded=tiny)
    rec = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert rec["config"]["steering"] == str(tmp_path / "steer")
    assert rec["steering"]["method"] == method and len(rec["steering"]["sha256"]) == 2
    assert _no_hooks(tiny.model)


def test_eval_refuses_an_artifact_from_another_model_or_adapter(tiny):
    art = _artifacts(tiny)["add"].replace(model={"spec": "other", "fingerprint": "hf:other", "adapter": None, "adapter_digest": None})
    with pytest.raises(ConfigError, match="--model other"):
        check_fits(art, tiny)
    art = art.replace(model={"spec": "tiny", "fingerprint": tiny.fingerprint, "adapter": "runs/rr", "adapter_digest": "abc"})
    with pytest.raises(ConfigError, match="add --adapter runs/rr"):
        check_fits(art, tiny)


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["steer", "--method", "scans", "--mode", "ablate", "--out", str(tmp_path / "x")]) == 2
    assert "only for --method refusal-direction" in capsys.readouterr().err
    assert main(["steer", "--method", "alphasteer", "--val-prompts", "0", "--out", str(tmp_path / "x")]) == 2
    assert main(["eval", "--steering", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "not a steering run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["steer", "--method", "caa", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["steer", "--method", "scans", "--strengths", "1,x", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2


@pytest.mark.parametrize("name", ["ablate", "scans"])
def test_steering_through_a_peft_wrapper(name):
    from peft import LoraConfig, get_peft_model

    loaded = tiny_model(num_layers=4, hidden_size=D)
    loaded.model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"], lora_dropout=0.0)).eval()
    art = _artifacts(loaded)[name]
    plain = generate(loaded, PROMPTS, max_new_tokens=4, batch_size=4)
    with steer(loaded, art, strength=0.0) as state:
        assert generate(loaded, PROMPTS, max_new_tokens=4, batch_size=4) == plain
    assert state.calls > 0
    assert _no_hooks(loaded.model)


def test_scans_decisions_follow_rows_that_finish_early(tiny, monkeypatch):
    """Rows leave the decoding batch at different steps; each remaining row keeps its own SCANS decision."""
    import mosr.generation as gen
    from mosr.models import format_prompt

    art = _artifacts(tiny)["scans"]
    s1, s2 = transition_states(tiny, PROMPTS, list(art.classify_layers))
    cos = torch.stack([transition_cosine(s1[:, i], s2[:, i], art.tensors[f"reference.{l}"])
                       for i, l in enumerate(art.classify_layers)]).mean(0)
    art = art.replace(threshold=float(cos.sort().values[1:3].mean()))  # two harmful, two benign
    tiny.tokenizer.padding_side = "left"
    texts = [format_prompt(tiny.tokenizer, p) for p in PROMPTS]
    with steer(tiny, art) as state:
        tokens = gen._generate_batch(tiny, texts, 6, [-1])
    harmful_rows = [i for i, d in enumerate(state.decisions) if d]
    stop = tokens[harmful_rows[0]][0]  # what a row steered towards refusal says first
    benign_rows = [i for i, d in enumerate(state.decisions) if not d]
    assert any(stop not in tokens[i] for i in benign_rows), "steering signs should make the rows differ"
    monkeypatch.setattr(gen, "stop_token_ids", lambda tok, *_: [stop])
    kept: list[list[int]] = []
    with steer(tiny, art), gen.on_rows_kept(lambda keep: kept.append(keep.tolist())):
        batched = generate(tiny, PROMPTS, max_new_tokens=6, batch_size=4)
    assert kept, "rows should have left the batch early"
    one_by_one = []
    for p in PROMPTS:
        with steer(tiny, art):
            one_by_one += generate(tiny, [p], max_new_tokens=6, batch_size=1)
    assert batched == one_by_one
    assert "" in batched and any(batched)


def test_a_changed_steering_run_is_not_resumed(tiny, tmp_path):
    from mosr.evaluation import EvalConfig, run_eval

    for name in ("a", "b"):
        _artifacts(tiny)["add"].replace(model={"spec": "tiny", "fingerprint": tiny.fingerprint, "adapter": None,
                                               "adapter_digest": None}).save(tmp_path / name)
    cfg = dict(model="tiny", suites=["over-refusal"], limit=1, judge="keyword", max_new_tokens=2, batch_size=2)
    run_eval(EvalConfig(**cfg, steering=str(tmp_path / "a")), tmp_path / "eval", loaded=tiny)
    with pytest.raises(RunError, match="other settings"):
        run_eval(EvalConfig(**cfg, steering=str(tmp_path / "b")), tmp_path / "eval", loaded=tiny)


def test_eval_adapter_flag_takes_a_steering_run(tmp_path, monkeypatch):
    import mosr.commands.eval as cmd

    SteeringArtifact("refusal-direction", (1,), {"direction.1": torch.zeros(D)},
                     model={"spec": "default", "adapter": "runs/rr"}).save(tmp_path / "s")
    seen = {}
    monkeypatch.setattr(cmd, "run_eval", lambda config, out: seen.setdefault("config", config) and {} or {"suites": {}})
    monkeypatch.setattr(cmd, "headline", lambda metrics: {})
    assert main(["eval", "--adapter", str(tmp_path / "s"), "--out", str(tmp_path / "e")]) == 0
    assert seen["config"].steering == str(tmp_path / "s") and seen["config"].adapter == "runs/rr"


def test_scans_prefill_reuses_the_classification_cache(tiny):
    """A generation prefill reuses the classifier pass's KV cache and matches the two-pass path, step after step."""
    from mosr.representations import encode

    art = _artifacts(tiny)["scans"]
    ids = torch.tensor([encode(tiny.tokenizer, PROMPTS[1]).ids])
    mask = torch.ones_like(ids)

    def prefill_then_step(reuse: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        # keyword input_ids with an empty cache is the reusing path; positional input_ids is the two-pass path
        if reuse:
            res = tiny.model(input_ids=ids, attention_mask=mask, use_cache=True, past_key_values=None)
        else:
            res = tiny.model(ids, attention_mask=mask, use_cache=True)
        length = res.past_key_values.get_seq_length()
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        step = tiny.model(input_ids=nxt, attention_mask=torch.ones(1, ids.shape[1] + 1, dtype=torch.long),
                          past_key_values=res.past_key_values, use_cache=True)
        return res.logits[:, -1], step.logits[:, -1], length

    with steer(tiny, art) as state, torch.inference_mode():
        one_prefill, one_step, one_len = prefill_then_step(True)
        two_prefill, two_step, two_len = prefill_then_step(False)
    plain = _logits(tiny)[:, -1]
    assert len(state.decisions) == 2 and state.reused_prefills == 1
    assert one_len == two_len == ids.shape[1]
    assert torch.allclose(one_prefill, two_prefill, atol=1e-4)
    assert torch.allclose(one_step, two_step, atol=1e-4)
    assert not torch.allclose(one_prefill, plain, atol=1e-4), "steering should change the prefill logits"


def test_reports_name_and_describe_the_steering_rows():
    from mosr.report_rows import method_summary, method_title

    for name in ("refusal-direction", "scans", "alphasteer"):
        assert method_title(name) != name and method_summary(name, "MISSING") != "MISSING"
    assert method_title("no-such-method") == "no-such-method"


def test_val_over_refusal_counts_partial_refusals_as_the_evaluation_does(monkeypatch):
    import mosr.generation
    from mosr.data import Sample
    from mosr.steering.run import SteerConfig, _val_scores

    outs = {"h": "I can't help with that.",
            "o1": "I can't help with that. However, here is some general information: use a kill command.",
            "o2": "Use the kill command.", "c": "The sea is calm."}
    monkeypatch.setattr(mosr.generation, "generate", lambda loaded, prompts, **kw: [outs[p] for p in prompts])
    val = {"harmful": [Sample("h", "h", "harmful", "t")], "over_refusal": [Sample("o1", "o1", "benign", "t"), Sample("o2", "o2", "benign", "t")],
           "capability": [Sample("c", "c", "benign", "t")]}
    scores = _val_scores(None, None, val, SteerConfig(method="scans", judge="keyword"), "val")
    assert scores["safety"] == 1.0 and scores["capability"] == 1.0
    assert scores["over_refusal"] == 0.5  # the partial refusal counts, as in `mosr eval`
