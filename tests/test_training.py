"""The training loop on a tiny random Llama: truncation, LoRA, resume, NaN stop, outputs, config, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mosr.errors import ConfigError, RunError, TrainingError
from mosr.models import attach_adapter, find_layers, format_prompt
from mosr.testing import tiny_model, toy_train_config, toy_training_data
from mosr.training import REFUSAL_TEMPLATES, Pair, TrainConfig, TrainingData, train
from mosr.training import losses
from mosr.training.model import add_lora, capture, hidden_at, truncated

N_LAYERS = 6


pytestmark = pytest.mark.usefixtures("one_thread")


toy_data = toy_training_data
cfg = toy_train_config


# ------------------------------------------------------------------------------------------ config
def test_config_yaml_overrides_and_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: rr\nalpha: 5\ntarget_layers: [1, 3]\n")
    c = TrainConfig.load(path, ["alpha=2.5", "lora_modules=q_proj,v_proj", "max_pseudo=null"])
    assert (c.method, c.alpha, c.target_layers, c.lora_modules, c.max_pseudo) == ("rr", 2.5, [1, 3], ["q_proj", "v_proj"], None)
    path.write_text("alpah: 5\n")
    with pytest.raises(ConfigError, match="unknown config key 'alpah'"):
        TrainConfig.load(path)
    with pytest.raises(ConfigError, match="^alpha must be > 0"):
        TrainConfig(alpha=0)
    with pytest.raises(ConfigError, match="^lora_dropout must be in"):
        TrainConfig(lora_dropout=2)
    with pytest.raises(ConfigError, match="^target_layers: expected"):
        TrainConfig.load(None, ["target_layers=abc"])
    with pytest.raises(ConfigError, match="^retain_datasets is empty"):
        TrainConfig(method="rr", retain_datasets=[])
    with pytest.raises(ConfigError, match="^target_layers: layer 9 is out of range"):
        TrainConfig(target_layers=[2, 9]).check_model(N_LAYERS)
    with pytest.raises(ConfigError, match="^method: unknown method"):
        TrainConfig(method="circuit-breakers")
    assert TrainConfig().resolved_target_layers(30) == [10, 20]
    assert TrainConfig().resolved_lora_layers(30) == list(range(21))


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    # YAML 1.1 reads 5e-4 as a string; float fields accept it, other fields still refuse it
    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-4\n")
    assert TrainConfig.load(path, ["alpha=1E1"]).lr == 5e-4
    assert TrainConfig.load(None, ["alpha=1E1"]).alpha == 10.0
    with pytest.raises(ConfigError, match="^steps: expected int"):
        TrainConfig.load(None, ["steps=5e-4"])
    with pytest.raises(ConfigError, match="^lr: expected float"):
        TrainConfig.load(None, ["lr=5e-4x"])


def test_empty_or_test_split_dataset_is_refused():
    from mosr.training.data import _load_many

    with pytest.raises(ConfigError, match="^pseudo_datasets: .*test split"):
        _load_many(["or-bench-hard:test"], "pseudo_datasets")
    with pytest.raises(ConfigError, match="^retain_datasets: .*evaluation splits"):
        _load_many(["self-instruct"], "retain_datasets")


# ------------------------------------------------------------------------------------ model plumbing
def test_truncated_hidden_states_equal_full_model_and_layers_are_restored():
    loaded = tiny_model(num_layers=N_LAYERS)
    model = loaded.model
    ids = torch.randint(3, 300, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        h = hidden_at(model, ids, mask, [1, 3], truncate=True)
        h_full = hidden_at(model, ids, mask, [1, 3], truncate=False)
        with truncated(model, 2):
            assert len(find_layers(model)) == 2
    # h_l is hidden_states[l + 1] (METHOD §3) and is the same with and without truncation
    for i, layer in enumerate([1, 3]):
        torch.testing.assert_close(h[i], full.hidden_states[layer + 1], rtol=0, atol=0)
        torch.testing.assert_close(h_full[i], full.hidden_states[layer + 1], rtol=0, atol=0)
    assert len(find_layers(model)) == N_LAYERS
    with torch.no_grad():
        again = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(again, full.logits, rtol=0, atol=0)
    hooks_before = [len(layer._forward_hooks) for layer in find_layers(model)]
    with capture(model, [0, 2]) as store:
        assert len(find_layers(model)[0]._forward_hooks) == hooks_before[0] + 1
    assert not store and [len(layer._forward_hooks) for layer in find_layers(model)] == hooks_before


def test_truncation_is_restored_after_an_error():
    model = tiny_model(num_layers=N_LAYERS).model
    with pytest.raises(RuntimeError):
        with truncated(model, 1):
            raise RuntimeError("boom")
    assert len(find_layers(model)) == N_LAYERS


def test_lora_only_on_chosen_layers():
    model = add_lora(tiny_model(num_layers=N_LAYERS).model, r=2, alpha=2, dropout=0.0, modules=["all-linear"], layers=[0, 1, 2], seed=0)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert {int(n.split("layers.")[1].split(".")[0]) for n in names} == {0, 1, 2}


def _erase_grad_norm(b_init_std: float) -> tuple[float, float]:
    """Erase term and its LoRA gradient norm at step 0, for a fresh adapter."""
    model = add_lora(tiny_model(num_layers=N_LAYERS).model, r=2, alpha=2, dropout=0.0, modules=["all-linear"], layers=[0, 1, 2],
                     seed=0, b_init_std=b_init_std)
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad(), model.disable_adapter():
        ref = hidden_at(model, ids, mask, [2], truncate=True)
    erase = losses.erase_per_sample(hidden_at(model, ids, mask, [2], truncate=True), ref, mask).mean()
    erase.backward()
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return float(erase), float(torch.stack(grads).norm()) if grads else 0.0


def test_a_zero_lora_start_gives_the_erase_term_no_gradient_a_gaussian_b_start_does():
    erase0, grad0 = _erase_grad_norm(0.0)
    erase1, grad1 = _erase_grad_norm(0.02)
    assert erase0 == pytest.approx(1.0, abs=1e-6) and grad0 < 1e-4
    assert erase1 < 1.0 and grad1 > 100 * max(grad0, 1e-6)


def test_lora_b_start_is_seeded_and_leaves_the_reference_alone():
    def b_weights(seed):
        model = add_lora(tiny_model(num_layers=N_LAYERS).model, r=2, alpha=2, dropout=0.0, modules=["all-linear"], layers=[0],
                         seed=seed, b_init_std=0.01)
        return model, [p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n]
    model, b0 = b_weights(0)
    _, b0_again = b_weights(0)
    _, b1 = b_weights(1)
    assert all(torch.equal(x, y) for x, y in zip(b0, b0_again))
    assert not all(torch.equal(x, y) for x, y in zip(b0, b1))
    assert all(float(x.std()) == pytest.approx(0.01, rel=0.5) for x in b0)
    ids = torch.randint(3, 300, (1, 8))
    plain = tiny_model(num_layers=N_LAYERS).model
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, plain(input_ids=ids).logits)


def test_negative_lora_b_init_std_is_refused():
    with pytest.raises(ConfigError, match="lora_b_init_std"):
        cfg(lora_b_init_std=-0.1)


# -------------------------------------------------------------------------------------------- loop
def test_lora_weights_change_base_weights_do_not(tmp_path):
    loaded = tiny_model(num_layers=N_LAYERS)
    base = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    result = train(cfg(steps=3), tmp_path / "run", loaded=loaded, data=toy_data())
    params = dict(loaded.model.named_parameters())
    for name, before in base.items():
        peft_name = next(n for n in params if n.endswith(name.replace(".weight", ".base_layer.weight")) or n.endswith(name))
        torch.testing.assert_close(params[peft_name].detach(), before, rtol=0, atol=0)
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # initialised at zero, moved by training
    assert len(result.history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)


def test_outputs_and_adapter_round_trip(tmp_path):
    loaded = tiny_model(num_layers=N_LAYERS)
    out = tmp_path / "run"
    train(cfg(steps=2), out, loaded=loaded, data=toy_data())
    for name in ("adapter_config.json", "adapter_model.safetensors", "mosr_adapter.json", "run.json", "losses.csv",
                 "losses.png", "oalw_weights.csv", "oalw_weights.png", "train_data.jsonl"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "mosr_adapter.json").read_text())
    assert {"base_spec", "base_fingerprint", "method", "config", "mosr_version"} <= set(meta)
    rows = (out / "oalw_weights.csv").read_text().splitlines()
    weights = [float(r.split(",")[-1]) for r in rows[1:]]
    assert len(weights) == 6 and sum(weights) / len(weights) == pytest.approx(1.0, abs=1e-5)
    assert len((out / "losses.csv").read_text().splitlines()) == 3
    # the saved adapter reproduces the trained model
    ids = torch.randint(3, 300, (1, 10))
    with torch.no_grad():
        trained = loaded.model.eval()(input_ids=ids).logits
        fresh = attach_adapter(tiny_model(num_layers=N_LAYERS), out)
        torch.testing.assert_close(fresh.model(input_ids=ids).logits, trained, rtol=1e-5, atol=1e-5)
    with pytest.raises(RunError, match="already has checkpoints"):
        train(cfg(steps=2), out, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())


@pytest.mark.parametrize("method", ["rr", "refusal-sft", "derta", "mosr-no-oalw-no-caa"])
def test_every_method_trains(tmp_path, method):
    result = train(cfg(method=method, steps=2), tmp_path / method, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    last = result.history[-1]
    spec = TrainConfig(method=method).spec
    assert (last["erase"] == last["erase"]) == spec.rep_loss  # NaN when the term is absent
    assert (last["refusal_ce"] == last["refusal_ce"]) == spec.refusal_ce
    assert (last["ce_retain"] == last["ce_retain"]) == spec.ce_retain


def test_caa_rows_in_a_step_train_only_refusal_tokens(tmp_path):
    from mosr.training.trainer import Trainer

    loaded = tiny_model(num_layers=N_LAYERS)
    c = cfg(caa_zero_share=0.0, caa_max_prefix=5)
    trainer = Trainer(loaded, c, toy_data(), tmp_path / "t")
    inp = trainer.make_inputs(0)
    tok = loaded.tokenizer
    refusal_ids = {tuple(ids) for pair in trainer.refusal_ids for ids in pair}
    assert inp.ce_ids.shape[0] == c.batch_size and bool((inp.ce_groups == 0).all())  # mosr: refusal rows only, no SFT retain
    got = tok.decode(inp.ce_targets.tolist())
    assert "Sure" not in got and "hurt" not in got  # neither prefix nor prompt is a target
    # each row's targets are one refusal template (after a prefix: with the separator)
    per_row = inp.ce_positions.sum(1).tolist()
    start = 0
    for n in per_row:
        assert tuple(inp.ce_targets[start : start + n].tolist()) in refusal_ids
        start += n
    assert trainer.make_inputs(0).rep_ids.equal(inp.rep_ids)  # batches are a function of (seed, step)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    """Tolerance: bitwise on the same machine and thread count (checked with atol=1e-6)."""
    from safetensors.torch import load_file

    c = cfg(steps=6, checkpoint_every=3, lora_dropout=0.1)
    train(c, tmp_path / "a", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())

    from mosr.training.trainer import Trainer

    original = Trainer.compute_loss

    def interrupted(self, outputs, inp, step):
        if step == 4:
            raise KeyboardInterrupt
        return original(self, outputs, inp, step)

    monkeypatch.setattr(Trainer, "compute_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(c, tmp_path / "b", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert (tmp_path / "b" / "checkpoints" / "step-000003").is_dir()
    monkeypatch.setattr(Trainer, "compute_loss", original)
    train(c, tmp_path / "b", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), resume=True)
    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    with pytest.raises(RunError, match="different config"):
        train(cfg(steps=6, checkpoint_every=3, lr=0.5), tmp_path / "b", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = losses.retain_loss
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        value = real(*args)
        return value * float("nan") if calls["n"] >= 3 else value

    monkeypatch.setattr(losses, "retain_loss", poisoned)
    with pytest.raises(TrainingError, match=r"step 2: non-finite loss .*step-000002"):
        train(cfg(steps=6, checkpoint_every=2), tmp_path / "run", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "adapter.safetensors").is_file()
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


# -------------------------------------------------------------------------------------- data + CLI
def test_leaking_training_set_stops(tmp_path, monkeypatch):
    from mosr.data import load_dataset
    from mosr.training.data import build_training_data

    leaky = tmp_path / "leaky.csv"
    rows = load_dataset("xstest-safe")[:3]
    leaky.write_text("prompt\n" + "\n".join(f'"{s.prompt}"' for s in rows) + "\n")
    c = TrainConfig(method="refusal-sft", retain_datasets=[str(leaky)], max_pairs=2, harmful_datasets=[])
    with pytest.raises(TrainingError, match="retain_datasets: every sample leaks"):
        build_training_data(tiny_model(num_layers=2), c)


def test_a_training_prompt_in_a_val_split_stops_unless_the_val_check_is_off(tmp_path):
    from mosr.data import load_dataset
    from mosr.training.data import build_training_data

    leaky = tmp_path / "leaky.csv"
    rows = load_dataset("self-instruct:val")[:3]
    leaky.write_text("prompt\n" + "\n".join(f'"{s.prompt}"' for s in rows) + "\n")
    c = TrainConfig(method="refusal-sft", retain_datasets=[str(leaky)], max_pairs=2, harmful_datasets=[], retain_answers="own")
    assert c.leak_check_val
    with pytest.raises(TrainingError, match="retain_datasets: every sample leaks"):
        build_training_data(tiny_model(num_layers=2), c)
    old = build_training_data(tiny_model(num_layers=2), TrainConfig(**{**c.__dict__, "leak_check_val": False}))
    assert old.summary["leaks_dropped"]["retain_datasets"] == 0


def test_the_val_leak_check_covers_the_validation_suite():
    from mosr.data import VALIDATION_SPECS
    from mosr.suites import SUITES

    assert sorted(VALIDATION_SPECS) == sorted(t.dataset for t in SUITES["validation"])


def test_own_completions_are_cached_by_model_and_prompts(tmp_path, monkeypatch, fake_generate):
    from mosr.data import Sample
    from mosr.training.data import own_completions

    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    calls = fake_generate
    loaded = tiny_model(num_layers=2)
    samples = [Sample(f"s{i}", f"prompt {i}", "benign", "toy") for i in range(3)]
    first = own_completions(loaded, samples, max_new_tokens=5, batch_size=2, desc="t")
    again = own_completions(loaded, samples, max_new_tokens=5, batch_size=2, desc="t")
    assert first == again == ["answer to prompt 0", "answer to prompt 1", "answer to prompt 2"] and len(calls) == 1
    own_completions(loaded, samples[:2], max_new_tokens=5, batch_size=2, desc="t")  # other prompts: new key
    other = tiny_model(num_layers=2, seed=1)  # other model fingerprint: new key
    own_completions(other, samples, max_new_tokens=5, batch_size=2, desc="t")
    assert len(calls) == 3


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    from mosr.cli import main
    from mosr.testing import save_tiny_model

    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    model_dir = save_tiny_model(tmp_path / "tiny", num_layers=4)
    conf = tmp_path / "c.yaml"
    conf.write_text("harmful_datasets: []\nmax_pairs: 4\nmax_retain: 4\nbatch_size: 2\nmax_length: 96\n")
    args = ["train", "--method", "rr", "--model", str(model_dir), "--config", str(conf), "--out", str(tmp_path / "run"),
            "--steps", "2", "--set", "checkpoint_every=1"]
    assert main(args) == 0
    assert "trained rr for 2 steps" in capsys.readouterr().out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["training_data"]["leak_check"]["passed"] and run["config"]["method"] == "rr"
    assert run["training_data"]["counts"]["malicious"] == 4
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "alpha=-1"]) == 2
    assert "alpha must be > 0" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--set", "nope=1"]) == 2
    assert "unknown config key 'nope'" in capsys.readouterr().err
    assert main(["train", "--list-keys"]) == 0


# ------------------------------------------------------------------------------------------ rep_norm
def test_rep_norm_statistics_masks_and_loss_use_the_standardised_states(tmp_path):
    from safetensors.torch import load_file

    from mosr.training.trainer import Trainer

    loaded = tiny_model(num_layers=N_LAYERS)
    trainer = Trainer(loaded, cfg(rep_norm="standardize"), toy_data(), tmp_path / "t")
    trainer.setup_rep_norm()
    saved = load_file(str(tmp_path / "t" / "rep_norm.safetensors"))
    assert saved["layers"].tolist() == trainer.norm_layers  # target layers (+ the OALW layer for mosr)
    assert trainer.rep_mean.shape == trainer.rep_std.shape == (len(trainer.norm_layers), saved["mean"].shape[1])
    assert (trainer.rep_std > 0).all()
    inp = trainer.make_inputs(0)
    assert (inp.erase_mask[:, 0] == 0).all() and (inp.retain_mask[:, 0] == 0).all()  # first token left out
    assert inp.retain_mask[:, 1].eq(1).all()
    # the step's loss terms equal the pure functions applied to the standardised states
    out = trainer.step_module(inp)
    _, parts = trainer.compute_loss(out, inp, 0)
    idx = [trainer.norm_layers.index(layer) for layer in trainer.target_layers]
    mean, std = trainer.rep_mean[idx], trainer.rep_std[idx]
    b_e = inp.erase_mask.shape[0]
    zp, zr = losses.standardize(out["h_policy"], mean, std), losses.standardize(out["h_ref"], mean, std)
    expect = losses.weighted_erase(losses.erase_per_sample(zp[:, :b_e], zr[:, :b_e], inp.erase_mask), inp.erase_weights)
    assert parts["erase"] == pytest.approx(float(expect.detach()), rel=1e-5)
    # a second trainer in the same folder reads the statistics back (resume) instead of recomputing them
    again = Trainer(tiny_model(num_layers=N_LAYERS), cfg(rep_norm="standardize"), toy_data(), tmp_path / "t")
    again.setup_rep_norm()
    torch.testing.assert_close(again.rep_mean, trainer.rep_mean)


def test_content_scope_leaves_out_the_shared_template_prefix(tmp_path):
    """The chat-template prefix has the same hidden states in every sample, so erasing it would erase benign prompts too."""
    from mosr.models import template_prefix_length
    from mosr.training.trainer import Trainer

    loaded = tiny_model(num_layers=N_LAYERS)
    n = template_prefix_length(loaded.tokenizer)
    assert loaded.tokenizer.decode(loaded.tokenizer(format_prompt(loaded.tokenizer, "x"))["input_ids"][:n]).startswith("<|im_start|>user")
    assert n > 1
    ids = [loaded.tokenizer(format_prompt(loaded.tokenizer, p), add_special_tokens=False)["input_ids"] for p in ("How do I hurt people?", "Write a poem")]
    with torch.no_grad():
        hs = [loaded.model(torch.tensor([i]), output_hidden_states=True).hidden_states[3][0] for i in ids]
    torch.testing.assert_close(hs[0][:n], hs[1][:n])  # identical for a harmful and a benign prompt
    assert not torch.allclose(hs[0][n], hs[1][n])

    trainer = Trainer(loaded, cfg(), toy_data(), tmp_path / "t")
    inp = trainer.make_inputs(0)
    assert trainer.cfg.erase_tokens == "content"
    first = inp.erase_mask.argmax(dim=1)
    assert first.eq(n).all(), first
    assert inp.retain_mask[:, 1].eq(1).all()  # retain keeps the prefix (only the attention sink is left out)


def test_rep_norm_none_keeps_raw_states_and_skip_first_token_can_be_turned_off(tmp_path):
    from mosr.training.trainer import Trainer

    trainer = Trainer(tiny_model(num_layers=N_LAYERS), cfg(rep_norm="none", skip_first_token=False, erase_tokens="all"), toy_data(), tmp_path / "t")
    trainer.setup_rep_norm()
    assert trainer.rep_mean is None and not (tmp_path / "t" / "rep_norm.safetensors").exists()
    inp = trainer.make_inputs(0)
    assert inp.erase_mask[:, 0].eq(1).all()
    h = torch.randn(2, 1, 3, 4)
    assert trainer.normalize(h, trainer.target_layers) is h


def test_retain_scale_multiplies_only_the_retain_coefficient(tmp_path):
    from mosr.training.trainer import Trainer

    totals = []
    for scale in (1.0, 3.0):
        trainer = Trainer(tiny_model(num_layers=N_LAYERS), cfg(method="rr", retain_scale=scale, lr=1e-1), toy_data(), tmp_path / f"s{scale}")
        trainer.setup_rep_norm()
        # move the adapter off zero so that the retain distance is not 0
        with torch.no_grad():
            for p in trainer.params:
                p.add_(0.05)
        inp = trainer.make_inputs(0)
        out = trainer.step_module(inp)
        loss, parts = trainer.compute_loss(out, inp, 2)
        c_ret, c_erase = losses.schedule(2, trainer.cfg.steps, trainer.cfg.alpha)
        assert parts["retain"] > 0
        assert float(loss) == pytest.approx(c_erase * parts["erase"] + scale * c_ret * parts["retain"], rel=1e-5)
        totals.append(float(loss))
    assert totals[1] > totals[0]
    with pytest.raises(ConfigError, match="^retain_scale must be > 0"):
        TrainConfig(retain_scale=0)


def test_mean_pooled_oalw_features_leave_out_the_shared_template_prefix(tmp_path):
    from mosr.training.trainer import Trainer

    trainer = Trainer(tiny_model(num_layers=N_LAYERS), cfg(rep_norm="none", oalw_pooling="mean_prompt"), toy_data(), tmp_path / "t")
    rows = [e for _, e in trainer.malicious[:2]]
    feats = trainer._features(rows, 2)
    n = trainer.shared_prefix
    with torch.no_grad(), trainer.peft_model.disable_adapter():
        for row, feat in zip(rows, feats):
            h = hidden_at(trainer.peft_model, torch.tensor([row.ids[: row.n_prompt]]), torch.ones(1, row.n_prompt, dtype=torch.long), [2], truncate=True)[0, 0]
            torch.testing.assert_close(feat, h[n : row.n_prompt].mean(0), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------- trainer: MOSR's additions
def _grads_and_parts(trainer, inp, weights: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Gradient of the step-0 loss (flattened over the LoRA parameters) with ``weights`` as the OALW weights of the batch."""
    inp.erase_weights = weights
    for p in trainer.params:
        p.grad = None
    loss, parts = trainer.compute_loss(trainer.step_module(inp), inp, 0)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in trainer.params]).clone(), parts


def test_oalw_weights_reach_the_gradient_of_the_erase_term(tmp_path):
    from mosr.training.trainer import Trainer

    c = cfg(lora_b_init_std=0.02, lora_dropout=0.0, steps=4)
    trainer = Trainer(tiny_model(num_layers=N_LAYERS), c, toy_data(), tmp_path / "t")
    inp = trainer.make_inputs(0)
    n = inp.erase_weights.numel()
    g0, p0 = _grads_and_parts(trainer, inp, torch.zeros(n))
    g1, p1 = _grads_and_parts(trainer, inp, torch.ones(n))
    g2, p2 = _grads_and_parts(trainer, inp, torch.tensor([2.0] + [0.0] * (n - 1)))
    g3, p3 = _grads_and_parts(trainer, inp, torch.tensor([0.0] + [2.0] * (n - 1)))
    assert p0["erase"] == 0.0 and p1["erase"] > 0
    assert float((g1 - g0).norm()) > 1e-3 * float(g1.norm())  # the erase term moves the adapter ...
    # ... in proportion to the weights: the weighted gradients of the two halves add up to twice the unit-weight one
    torch.testing.assert_close((g2 - g0) + (g3 - g0), 2 * (g1 - g0), rtol=1e-4, atol=1e-7)
    assert p2["erase"] + p3["erase"] == pytest.approx(2 * p1["erase"], rel=1e-5)
    assert not torch.allclose(g2, g3)  # which sample carries the weight changes the update


def test_trained_oalw_weights_are_the_ones_the_steps_use(tmp_path):
    from mosr.training.trainer import Trainer

    trainer = Trainer(tiny_model(num_layers=N_LAYERS), cfg(), toy_data(), tmp_path / "t")
    trainer.setup_rep_norm()
    trainer.setup_oalw()
    assert not torch.allclose(trainer.erase_weights, torch.ones_like(trainer.erase_weights))  # overlap-aware, not uniform
    ids = [p.id for p, _ in trainer.malicious]
    for step in range(3):
        inp = trainer.make_inputs(step)
        expected = torch.stack([trainer.erase_weights[ids.index(i)] for i in inp.info["erase_ids"]])
        torch.testing.assert_close(inp.erase_weights, expected)


@pytest.mark.parametrize("method, pseudo_in_retain", [("mosr", True), ("rr", False)])
def test_pseudo_malicious_rows_enter_the_retain_pool(tmp_path, method, pseudo_in_retain):
    from mosr.training.trainer import Trainer

    trainer = Trainer(tiny_model(num_layers=N_LAYERS), cfg(method=method), toy_data(), tmp_path / method)
    pool = {p.role for p, _ in trainer.retain_pool}
    assert pool == ({"benign", "pseudo"} if pseudo_in_retain else {"benign"})
    seen = []
    for step in range(6):
        inp = trainer.make_inputs(step)
        b_e = inp.erase_mask.shape[0]
        texts = [trainer.tok.decode(row[m.bool()].tolist()) for row, m in zip(inp.rep_ids[b_e:], inp.rep_mask[b_e:])]
        seen += ["Python process" in t for t in texts]
    assert any(seen) == pseudo_in_retain


def test_exported_checkpoints_are_adapters_of_their_step(tmp_path):
    """The last checkpoint exports to the run's own adapter; an earlier one is a different, loadable adapter."""
    from safetensors.torch import load_file

    from mosr.training import checkpoint_steps, export_checkpoint

    out = tmp_path / "run"
    train(cfg(steps=3, checkpoint_every=1, keep_checkpoints=5), out, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert checkpoint_steps(out) == [1, 2, 3]
    final = load_file(str(out / "adapter_model.safetensors"))
    last = load_file(str(export_checkpoint(out, 3, tmp_path / "s3") / "adapter_model.safetensors"))
    first = export_checkpoint(out, 1, tmp_path / "s1")
    assert set(last) == set(final) and all(torch.equal(last[k], final[k]) for k in final)
    early = load_file(str(first / "adapter_model.safetensors"))
    assert any(not torch.equal(early[k], final[k]) for k in final)
    assert json.loads((first / "mosr_adapter.json").read_text())["checkpoint_step"] == 1
    ids = torch.randint(3, 300, (1, 10))
    with torch.no_grad():
        a = attach_adapter(tiny_model(num_layers=N_LAYERS), tmp_path / "s3").model(input_ids=ids).logits
        b = attach_adapter(tiny_model(num_layers=N_LAYERS), out).model(input_ids=ids).logits
        c = attach_adapter(tiny_model(num_layers=N_LAYERS), first).model(input_ids=ids).logits
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(RunError, match="no checkpoint at step 7"):
        export_checkpoint(out, 7, tmp_path / "s7")


def test_stop_after_keeps_the_same_weights_as_the_full_run_at_that_step(tmp_path):
    """A run stopped after k steps of a T-step schedule is checkpoint k of the full run, exportable, and
    not loadable as a finished adapter; resuming finishes it."""
    from safetensors.torch import load_file

    from mosr.training import checkpoint_steps, export_checkpoint

    full, stopped = tmp_path / "full", tmp_path / "stopped"
    train(cfg(steps=4, checkpoint_every=1, keep_checkpoints=5), full, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    result = train(cfg(steps=4, checkpoint_every=1, keep_checkpoints=5), stopped, loaded=tiny_model(num_layers=N_LAYERS),
                   data=toy_data(), stop_after=2)
    assert result.steps == 2 and len(result.history) == 2 and checkpoint_steps(stopped) == [1, 2]
    assert not (stopped / "adapter_model.safetensors").exists()  # no finished adapter
    assert json.loads((stopped / "run.json").read_text())["result"]["stopped_after"] == 2
    a = load_file(str(export_checkpoint(stopped, 2, tmp_path / "a") / "adapter_model.safetensors"))
    b = load_file(str(export_checkpoint(full, 2, tmp_path / "b") / "adapter_model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match="stop_after must be in 1..steps"):
        train(cfg(steps=4), tmp_path / "bad", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), stop_after=5)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    train(cfg(steps=4, checkpoint_every=1, keep_checkpoints=5), stopped, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(),
          resume=True)
    done = load_file(str(stopped / "adapter_model.safetensors"))
    ref = load_file(str(full / "adapter_model.safetensors"))
    for k in ref:  # the resume tolerance of test_resume_reproduces_an_uninterrupted_run
        torch.testing.assert_close(done[k], ref[k], rtol=0, atol=1e-6)


def test_the_stop_after_key_ends_the_run_with_a_finished_adapter_of_that_step(tmp_path):
    """``stop_after`` in the config (how an experiment trains a chosen step-frontier point) ends the run at
    step k of the T-step schedule with a finished adapter equal to checkpoint k of the full run."""
    from safetensors.torch import load_file

    from mosr.training import export_checkpoint

    full, ended = tmp_path / "full", tmp_path / "ended"
    train(cfg(steps=4, checkpoint_every=1, keep_checkpoints=5), full, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    result = train(cfg(steps=4, stop_after=2), ended, loaded=tiny_model(num_layers=N_LAYERS), data=toy_data())
    assert result.steps == 2 and len(result.history) == 2
    meta = json.loads((ended / "run.json").read_text())
    assert meta["config"]["stop_after"] == 2 and "stopped_after" not in meta["result"]
    a = load_file(str(ended / "adapter_model.safetensors"))  # a finished adapter, loadable as it is
    b = load_file(str(export_checkpoint(full, 2, tmp_path / "b") / "adapter_model.safetensors"))
    c = load_file(str(full / "adapter_model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # not the step-4 weights
    for bad in (0, 5):
        with pytest.raises(ConfigError, match="stop_after must be in 1..steps"):
            cfg(steps=4, stop_after=bad)
    with pytest.raises(ConfigError, match="stop_after must be in 1..steps"):  # --stop-after past the config's end
        train(cfg(steps=4, stop_after=2), tmp_path / "past", loaded=tiny_model(num_layers=N_LAYERS), data=toy_data(), stop_after=3)
