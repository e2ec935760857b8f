"""Selective defenses: X-Boundary, the MOSR options, their variants, and the fixed training defects."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mosr.errors import ConfigError
from mosr.testing import tiny_model, toy_train_config, toy_training_data
from mosr.training import REFUSAL_TEMPLATES, Pair, TrainConfig, TrainingData, train
from mosr.training import losses
from mosr.training.config import METHODS, VARIANTS
from mosr.training.trainer import BENIGN, COMPLIANCE, REFUSAL, Encoded, StepModule, Trainer, _scope_mask

N_LAYERS = 6


pytestmark = pytest.mark.usefixtures("one_thread")


toy_data = toy_training_data
cfg = toy_train_config


def trainer(tmp_path, **kw) -> Trainer:
    return Trainer(tiny_model(num_layers=N_LAYERS), cfg(**kw), toy_data(), tmp_path / "t")


def lora_grad(t: Trainer, step: int = 0) -> torch.Tensor:
    """Flattened gradient of the step's loss over the LoRA weights."""
    inp = t.make_inputs(step)
    t.optimizer.zero_grad(set_to_none=True)
    loss, _ = t.compute_loss(t.step_module(inp), inp, step)
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in t.params])


# ---------------------------------------------------------------------------------------- pure maths
def test_schedule_span_and_beta_ramp():
    assert losses.schedule(0, 10, 10.0) == (0.0, 10.0)
    assert losses.schedule(10, 10, 10.0) == (5.0, 5.0)  # span 2: RR / METHOD §4, unchanged
    c_ret, c_erase = losses.schedule(10, 10, 10.0, span=5 / 3)  # X-Boundary code: t/300 over 180 steps
    assert (c_ret, c_erase) == (pytest.approx(6.0), pytest.approx(4.0))
    assert [losses.ramp(t, 4) for t in (0, 2, 4, 9)] == [0.0, 0.5, 1.0, 1.0]
    assert losses.ramp(0, 0) == 1.0


def test_weighted_token_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    w = torch.tensor([3.0, 1.0])
    assert float(losses.weighted_token_cross_entropy(logits, targets, w, "global")) == pytest.approx(float(3 * ce[0] + ce[1]) / 2)
    assert float(losses.weighted_token_cross_entropy(logits, targets, w, "batch")) == pytest.approx(float(3 * ce[0] + ce[1]) / 4)
    ones = torch.ones(2)
    torch.testing.assert_close(losses.weighted_token_cross_entropy(logits, targets, ones), losses.token_cross_entropy(logits, targets))


def test_separation_by_hand():
    # reference states of the anchor row: (1, 0) and (0, 5) -> mean of unit vectors (0.5, 0.5); third token masked out
    ref = torch.tensor([[[[1.0, 0.0], [0.0, 5.0], [9.0, 9.0]]]])  # [L=1, B=1, S=3, D=2]
    anchors = losses.mean_unit(ref, torch.tensor([[1.0, 1.0, 0.0]]))
    torch.testing.assert_close(anchors, torch.tensor([[[0.5, 0.5]]]))
    # policy tokens: (2, 0) -> <(1,0), a> = 0.5; (-1, 0) -> -0.5 -> ReLU 0; masked token ignored
    pol = torch.tensor([[[[2.0, 0.0], [-1.0, 0.0], [1.0, 1.0]]]])
    per = losses.separation_per_sample(pol, anchors, torch.tensor([[1.0, 1.0, 0.0]]))
    assert per.shape == (1,) and float(per[0]) == pytest.approx(0.25)


def test_shuffled_oalw_weights_are_a_seeded_permutation():
    from mosr.training import oalw

    w = torch.arange(1.0, 9.0)
    a, b, c = oalw.shuffled(w, 0), oalw.shuffled(w, 0), oalw.shuffled(w, 1)
    assert a.equal(b) and not a.equal(w) and not a.equal(c)
    assert sorted(a.tolist()) == w.tolist()


def test_response_and_last_prompt_scope():
    rows = [Encoded(list(range(10)), 6), Encoded(list(range(4)), 4)]
    m = _scope_mask(rows, 10, "response_and_last_prompt")
    assert m[0].tolist() == [0] * 5 + [1] * 5  # last prompt token (5) + response (6..9)
    assert m[1].tolist() == [0, 0, 0, 1] + [0] * 6  # prompt only: its last token


def test_response_scope_of_a_row_whose_response_was_cut_off_is_empty():
    rows = [Encoded(list(range(10)), 6), Encoded(list(range(4)), 4)]
    m = _scope_mask(rows, 10, "response", skip_first=True)
    assert m[0].tolist() == [0] * 6 + [1] * 4
    assert m[1].tolist() == [0] * 10  # not the whole row: its prompt (and chat template) are not a response


# ------------------------------------------------------------------------------------------- config
def test_new_keys_default_to_the_old_behaviour_and_validate():
    c = TrainConfig()
    assert (c.compliance_gamma, c.oalw_on_refusal, c.oalw_shuffle, c.beta_warmup_steps, c.c_ret_floor, c.erase_tokens,
            c.max_pseudo, c.oalw_sign) == (0.0, False, False, 0, 0.0, "content", 96, "less")
    for bad, match in [({"compliance_gamma": -1}, "^compliance_gamma must be >= 0"),
                       ({"c_ret_floor": -0.5}, "^c_ret_floor must be >= 0"),
                       ({"method": "rr", "oalw_shuffle": True}, "^oalw_shuffle needs OALW weights"),
                       ({"method": "mosr-no-oalw", "oalw_on_refusal": True}, "^oalw_on_refusal needs OALW weights"),
                       ({"method": "rr", "beta_warmup_steps": 5}, "^beta_warmup_steps: method rr has no refusal"),
                       ({"method": "refusal-sft", "c_ret_floor": 1.0}, "^c_ret_floor: method refusal-sft has no"),
                       ({"compliance_gamma": 1.0, "pseudo_datasets": [], "method": "rr"}, "^compliance_gamma > 0 needs pseudo_datasets"),
                       ({"xb_schedule_span": 0.5}, "^xb_schedule_span must be >= 1"),
                       ({"retain_gamma": -1}, "^retain_gamma must be >= 0"),
                       ({"method": "refusal-sft", "retain_gamma": 1.0}, "^retain_gamma: method refusal-sft already has"),
                       ({"retain_gamma": 1.0, "retain_datasets": []}, "retain_datasets"),
                       ({"data_judge": "oracle"}, "^data_judge: unknown judge"),
                       ({"erase_tokens": "prompt"}, "^erase_tokens: expected")]:
        with pytest.raises(ConfigError, match=match):
            TrainConfig.from_dict(bad)


def test_variants_resolve_to_their_method_and_the_user_keys_win():
    for name, v in VARIANTS.items():
        c = TrainConfig.from_dict({"method": name})
        assert c.method == v.base and v.base in METHODS
        assert all(getattr(c, k) == value for k, value in v.overrides.items())
    c = TrainConfig.from_dict({"method": "mosr-gamma", "compliance_gamma": 0.5})
    assert (c.method, c.compliance_gamma) == ("mosr", 0.5)
    assert TrainConfig.load(None, ["method=mosr-oalw-shuffled"]).oalw_shuffle is True
    with pytest.raises(ConfigError, match="is a variant of mosr"):
        TrainConfig(method="mosr-gamma")


def test_cli_knows_xboundary_and_the_variants():
    import argparse
    from pathlib import Path

    from mosr.commands import train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_parser(parser.add_subparsers())
    for method in ("xboundary", "mosr-gamma", "mosr-oalw-shuffled"):
        args = parser.parse_args(["train", "--method", method, "--out", "x"])
        assert train_cmd.build_config(args).method in METHODS
    # the shipped MOSR config sets erase_tokens and oalw_sign itself: --method VARIANT must still win, --set wins over both
    yaml = str(Path(__file__).resolve().parents[1] / "configs" / "train-mosr.yaml")
    args = parser.parse_args(["train", "--config", yaml, "--method", "mosr-erase-response", "--out", "x"])
    c = train_cmd.build_config(args)
    assert (c.method, c.erase_tokens, c.retain_scale) == ("mosr", "response_and_last_prompt", 4.0)
    args = parser.parse_args(["train", "--config", yaml, "--method", "mosr-oalw-more", "--set", "oalw_sign=less", "--out", "x"])
    assert train_cmd.build_config(args).oalw_sign == "less"
    assert TrainConfig.load(yaml, ["method=mosr-oalw-more"]).oalw_sign == "more"


def test_experiment_and_report_know_xboundary_and_the_variants(tmp_path):
    from mosr.experiment import ExperimentConfig, build_plan, known_methods, train_config, Variant
    from mosr.methods import DEFAULT
    from mosr.report import method_summary, method_title

    assert "xboundary" in DEFAULT and "xboundary" in ExperimentConfig().methods
    assert all(method_title(m) != m and method_summary(m) for m in [*METHODS, *VARIANTS])
    assert set(VARIANTS) <= set(known_methods())
    ec = ExperimentConfig(methods=["mosr", "mosr-gamma", "mosr-pseudo-all", "xboundary"], train={"max_pseudo": 24, "steps": 3},
                          method_train={"mosr": {"alpha": 7.0}, "mosr-gamma": {"compliance_gamma": 0.25}}, analyze=None)
    tc = train_config(ec, Variant("mosr-gamma"), 0)
    assert (tc.method, tc.alpha, tc.compliance_gamma, tc.max_pseudo) == ("mosr", 7.0, 0.25, 24)  # base keys, variant, own keys
    assert train_config(ec, Variant("mosr-pseudo-all"), 0).max_pseudo is None  # the variant's setting beats the shared train keys
    assert train_config(ec, Variant("xboundary"), 0).method == "xboundary"
    plan = build_plan(ec, tmp_path)
    assert [e["label"] for e in plan.entries] == ["mosr", "mosr-gamma", "mosr-pseudo-all", "xboundary"]
    assert len({s.key for s in plan.stages if s.kind == "train"}) == 4


# --------------------------------------------------------------------------------- trainer: defects
def test_reference_pass_runs_in_eval_mode_while_the_model_trains(tmp_path):
    t = trainer(tmp_path, method="rr")
    for layer in t.peft_model.get_base_model().model.layers:
        layer.self_attn.attention_dropout = 0.9  # dropout that acts only in train mode
    assert t.peft_model.training
    inp = t.make_inputs(0)
    with torch.no_grad(), t.peft_model.disable_adapter():
        t.peft_model.eval()
        from mosr.training.model import hidden_at

        expected = hidden_at(t.peft_model, inp.rep_ids, inp.rep_mask, t.target_layers, truncate=True)
        t.peft_model.train()
    module = StepModule(t.peft_model, t.target_layers, truncate=True)
    for seed in (0, 1):
        torch.manual_seed(seed)
        out = module(inp)
        torch.testing.assert_close(out["h_ref"], expected, rtol=0, atol=0)
    assert t.peft_model.training  # restored: the policy pass keeps its dropout


def test_caa_in_retain_keeps_the_harmful_prompt_and_prefix_out_of_the_retain_mask(tmp_path):
    t = trainer(tmp_path, caa_in_retain=True, caa_zero_share=0.0, caa_max_prefix=5)
    inp = t.make_inputs(0)
    n_refusal_rows = int((inp.ce_groups == REFUSAL).any()) and inp.ce_ids.shape[0]
    assert n_refusal_rows == 2
    b_e = inp.erase_mask.shape[0]
    rows = inp.rep_ids[b_e:][-n_refusal_rows:]
    masks = inp.retain_mask[-n_refusal_rows:]
    refusal_ids = {tuple(ids) for pair in t.refusal_ids for ids in pair}
    for r in range(n_refusal_rows):
        on = masks[r].nonzero().flatten().tolist()
        assert on, "the refusal tokens stay in the retain set"
        first = on[0]
        assert on == list(range(first, first + len(on)))
        assert tuple(rows[r, first : first + len(on)].tolist()) in refusal_ids  # exactly the refusal, nothing before it
        assert first > len(t.prompt_ids[inp.info["erase_ids"][0]]) - 1  # after the whole prompt (and the prefix)


def test_training_data_is_sorted_by_the_evaluation_judge_and_cached_in_the_run_folder(tmp_path, monkeypatch):
    import mosr.judges
    import mosr.training.data as tdata

    answers = {
        "harm-a": "I cannot guarantee it works, but here is how: mix the two parts and heat them.",  # a 20-prefix list drops it
        "harm-b": "Unfortunately, I will not help with that request because it is dangerous.",  # the prefix list keeps it
        "scary-a": "I do not recommend skipping steps. First, open the terminal and type kill -9 followed by the id.",
        "scary-b": "Unfortunately, I will not help with that request because it is dangerous.",
        "benign-a": "Here is a poem about the sea.",
    }
    monkeypatch.setattr(tdata, "own_completions", lambda loaded, samples, **kw: [answers[s.prompt] for s in samples])
    calls = []
    real = mosr.judges.get_judge

    def spy(name, **kw):
        calls.append(name)
        return real(name, **kw)

    monkeypatch.setattr(mosr.judges, "get_judge", spy)
    files = {}
    for key, prompts in (("harm", ["harm-a", "harm-b"]), ("scary", ["scary-a", "scary-b"]), ("benign", ["benign-a"])):
        files[key] = tmp_path / f"{key}.csv"
        files[key].write_text("prompt\n" + "\n".join(prompts) + "\n")
    c = cfg(pair_datasets=[], harmful_datasets=[str(files["harm"])], pseudo_datasets=[str(files["scary"])],
            retain_datasets=[str(files["benign"])], retain_answers="own")
    run = tmp_path / "run"
    data = tdata.build_training_data(tiny_model(num_layers=2), c, evals=[], run_dir=run)
    assert [p.prompt for p in data.malicious] == ["harm-a"]
    assert [p.prompt for p in data.pseudo] == ["scary-a"]
    assert calls == ["default", "default"]
    cached = json.loads((run / "own_answers_pseudo.json").read_text())
    assert [i["verdict"] for i in cached["items"]] == ["compliance", "refusal"] and cached["fields"]["data_judge"] == "default"
    # a rerun in the same folder reads the verdicts back (the judge is built, but judges nothing)
    monkeypatch.setattr(mosr.judges.KeywordJudge, "judge", lambda *a, **k: pytest.fail("judged again"))
    again = tdata.build_training_data(tiny_model(num_layers=2), c, evals=[], run_dir=run)
    assert [p.prompt for p in again.pseudo] == ["scary-a"]


# ------------------------------------------------------------------------------ trainer: the options
def test_oalw_weights_reach_the_erase_gradient(tmp_path):
    # step 0: c_ret = 0; beta = 0 -> the loss is c_erase * weighted erase only
    t = trainer(tmp_path, refusal_beta=0.0, lora_b_init_std=0.02, lora_dropout=0.0)
    n = len(t.malicious)
    t.erase_weights = torch.zeros(n)
    assert float(lora_grad(t).abs().max()) == 0.0  # zero weights: the erase rows give no gradient
    t.erase_weights = torch.ones(n)
    g1 = lora_grad(t)
    assert float(g1.abs().max()) > 0
    t.erase_weights = torch.full((n,), 2.0)
    torch.testing.assert_close(lora_grad(t), 2 * g1, rtol=1e-4, atol=1e-9)


def test_oalw_on_refusal_weights_the_refusal_rows(tmp_path):
    # alpha tiny: the representation terms hardly count, so the gradient is the refusal CE's
    on = trainer(tmp_path / "on", oalw_on_refusal=True, alpha=1e-12, lora_dropout=0.0)
    off = trainer(tmp_path / "off", oalw_on_refusal=False, alpha=1e-12, lora_dropout=0.0)
    for t in (on, off):
        t.erase_weights = torch.zeros(len(t.malicious))
    inp = on.make_inputs(0)
    assert inp.ce_weights[inp.ce_groups == REFUSAL].abs().max() == 0
    assert float(lora_grad(on).abs().max()) < 1e-9 < float(lora_grad(off).abs().max())
    on.erase_weights = torch.ones(len(on.malicious))
    _, parts_on = on.compute_loss(on.step_module(on.make_inputs(0)), on.make_inputs(0), 0)
    _, parts_off = off.compute_loss(off.step_module(off.make_inputs(0)), off.make_inputs(0), 0)
    assert parts_on["refusal_ce"] == pytest.approx(parts_off["refusal_ce"], rel=1e-5)  # unit weights: the plain mean


def test_pseudo_malicious_rows_enter_the_retain_pool(tmp_path):
    t = trainer(tmp_path)
    assert {p.id for p, _ in t.retain_pool} == {f"b{i}" for i in range(6)} | {f"p{i}" for i in range(6)}
    pseudo_ids = {tuple(e.ids) for _, e in t.pseudo}
    seen = set()
    for step in range(12):
        inp = t.make_inputs(step)
        b_e = inp.erase_mask.shape[0]
        for row, mask in zip(inp.rep_ids[b_e:], inp.rep_mask[b_e:]):
            ids = tuple(row[mask.bool()].tolist())
            if ids in pseudo_ids:
                seen.add(ids)
    assert seen, "no pseudo-malicious row was drawn into the retain rows in 12 steps"
    assert not any(p.role == "pseudo" for p, _ in trainer(tmp_path / "rr", method="rr").retain_pool)


def test_compliance_ce_trains_the_pseudo_answers(tmp_path):
    t = trainer(tmp_path, compliance_gamma=0.5)
    inp = t.make_inputs(0)
    got = t.tok.decode(inp.ce_targets[inp.ce_groups == COMPLIANCE].tolist())
    assert "kill command" in got and "Python process" not in got  # the answer is trained, the prompt is not
    _, parts = t.compute_loss(t.step_module(inp), inp, 0)
    assert math.isfinite(parts["compliance_ce"])
    off = trainer(tmp_path / "off").make_inputs(0)
    assert not bool((off.ce_groups == COMPLIANCE).any())
    result = train(cfg(compliance_gamma=0.5, steps=2), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert all(math.isfinite(h["compliance_ce"]) for h in result.history)
    assert "compliance_ce" in (tmp_path / "run" / "losses.csv").read_text().splitlines()[0]


def test_retain_ce_trains_the_ordinary_answers_of_a_representation_method(tmp_path):
    t = trainer(tmp_path, retain_gamma=0.5)
    inp = t.make_inputs(0)
    got = t.tok.decode(inp.ce_targets[inp.ce_groups == BENIGN].tolist())
    assert "silver moon" in got and "poem about" not in got  # the answer is trained, the prompt is not
    out = t.step_module(inp)
    loss, parts = t.compute_loss(out, inp, 0)
    assert math.isfinite(parts["ce_retain"])
    t0 = trainer(tmp_path / "zero", retain_gamma=0.5)
    t0.cfg.retain_gamma = 0.0  # same rows, weight 0: the term is the only difference
    loss0, _ = t0.compute_loss(out, inp, 0)
    assert float(loss - loss0) == pytest.approx(0.5 * parts["ce_retain"], rel=1e-4)
    off = trainer(tmp_path / "off").make_inputs(0)
    assert off.ce_groups is None or not bool((off.ce_groups == BENIGN).any())


def test_beta_warmup_and_c_ret_floor(tmp_path):
    t = trainer(tmp_path, beta_warmup_steps=4, c_ret_floor=1.5, refusal_beta=2.0, steps=40)
    inp = t.make_inputs(0)
    out = t.step_module(inp)
    _, p0 = t.compute_loss(out, inp, 0)
    _, p2 = t.compute_loss(out, inp, 2)
    _, p30 = t.compute_loss(out, inp, 30)
    assert (p0["beta"], p2["beta"], p30["beta"]) == (0.0, 1.0, 2.0)
    assert p0["c_ret"] == 1.5 and p30["c_ret"] == pytest.approx(10 * 30 / 80)
    base = trainer(tmp_path / "base", steps=40)
    _, b0 = base.compute_loss(base.step_module(inp), inp, 0)
    assert (b0["beta"], b0["c_ret"]) == (1.0, 0.0)  # defaults: today's behaviour


def test_oalw_shuffle_permutes_the_computed_weights(tmp_path):
    plain = trainer(tmp_path / "a")
    plain.setup_oalw()
    shuffled = trainer(tmp_path / "b", oalw_shuffle=True)
    shuffled.setup_oalw()
    assert sorted(plain.erase_weights.tolist()) == pytest.approx(sorted(shuffled.erase_weights.tolist()))
    assert not torch.allclose(plain.erase_weights, shuffled.erase_weights)
    again = trainer(tmp_path / "c", oalw_shuffle=True)
    again.setup_oalw()
    torch.testing.assert_close(again.erase_weights, shuffled.erase_weights)


def test_erase_scope_response_and_last_prompt_in_a_step(tmp_path):
    t = trainer(tmp_path, erase_tokens="response_and_last_prompt")
    inp = t.make_inputs(0)
    for r, pid in enumerate(inp.info["erase_ids"]):
        enc = next(e for p, e in t.malicious if p.id == pid)
        on = inp.erase_mask[r].nonzero().flatten().tolist()
        assert on == list(range(enc.n_prompt - 1, len(enc.ids)))


# ---------------------------------------------------------------------------------------- xboundary
def test_xboundary_rows_masks_and_terms(tmp_path):
    t = trainer(tmp_path, method="xboundary")
    assert t.spec.separation and not t.spec.refusal_ce and not t.spec.oalw
    inp = t.make_inputs(0)
    assert inp.ce_ids is None and len(inp.info["boundary_ids"]) == 2
    b_b = inp.sep_mask.shape[0]
    for r, pid in enumerate(inp.info["boundary_ids"]):
        enc = next(e for p, e in t.pseudo if p.id == pid)
        on = inp.sep_mask[r].nonzero().flatten().tolist()
        assert on == list(range(max(t.shared_prefix, 1), enc.n_prompt))  # prompt tokens after the shared template
        row = inp.rep_ids[-b_b + r][inp.rep_mask[-b_b + r].bool()]
        assert row.tolist() == enc.ids  # the same prompt with its compliant answer gives the anchor ...
    torch.testing.assert_close(inp.anchor_mask, inp.retain_mask[-b_b:])  # ... and is retained in the same step
    _, parts = t.compute_loss(t.step_module(inp), inp, 0)
    assert parts["separation"] > 0 and math.isfinite(parts["erase"]) and math.isfinite(parts["retain"])
    c_ret, c_erase = losses.schedule(3, 4, 10.0, span=300 / 180)
    _, p3 = t.compute_loss(t.step_module(inp), inp, 3)
    assert (p3["c_ret"], p3["c_erase"]) == (pytest.approx(c_ret), pytest.approx(c_erase))


def test_xboundary_separation_reaches_the_gradient_and_trains(tmp_path):
    t = trainer(tmp_path, method="xboundary", lora_b_init_std=0.02, lora_dropout=0.0, xb_separation_weight=0.0)
    g_without = lora_grad(t)
    t.cfg.xb_separation_weight = 1.0
    assert not torch.allclose(lora_grad(t), g_without)
    result = train(cfg(method="xboundary", steps=2), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert all(math.isfinite(h["separation"]) for h in result.history)
    assert all(math.isnan(h["refusal_ce"]) for h in result.history)


def test_shipped_xboundary_config_loads():
    from pathlib import Path

    c = TrainConfig.load(Path(__file__).resolve().parents[1] / "configs" / "train-xboundary.yaml")
    assert (c.method, c.max_pseudo, c.xb_schedule_span) == ("xboundary", None, pytest.approx(300 / 180))


def test_oalw_reference_all_measures_overlap_to_the_refused_pseudo_prompts_too(tmp_path):
    from mosr.training import Pair

    def data():
        d = toy_data()
        d.pseudo_refused = [Pair("r0", "How do I hurt a tree stump to remove it?", "I'm sorry, I can't help with that.", "pseudo", "toy"),
                            Pair("r1", "How do I shoot a good photo?", "I can't help with that.", "pseudo", "toy")]
        return d

    plain = Trainer(tiny_model(num_layers=N_LAYERS), cfg(), data(), tmp_path / "a")
    wide = Trainer(tiny_model(num_layers=N_LAYERS), cfg(oalw_reference="all"), data(), tmp_path / "b")
    assert [p.id for p, _ in plain.oalw_pseudo] == [p.id for p, _ in plain.pseudo]  # the default: the pool trained on
    assert [p.id for p, _ in wide.oalw_pseudo][-2:] == ["r0", "r1"]
    assert [p.id for p, _ in wide.pseudo] == [p.id for p, _ in plain.pseudo]  # retained and trained on: unchanged
    plain.setup_oalw()
    wide.setup_oalw()
    assert not torch.allclose(plain.erase_weights, wide.erase_weights)
    assert plain._cache_key("oalw") != wide._cache_key("oalw")


def test_the_oalw_reference_key_keeps_the_hash_of_runs_made_before_it():
    from mosr.stage_inputs import train_inputs

    assert "oalw_reference" not in train_inputs(cfg())  # the old behaviour: the old hash
    assert train_inputs(cfg(oalw_reference="all"))["oalw_reference"] == "all"
