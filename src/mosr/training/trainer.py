"""One training loop for MOSR, RR and the SFT baselines.

The pieces are kept apart:

* :class:`StepInputs` / :meth:`Trainer.make_inputs` build the tensors of one step (data handling,
  seeded per step, so a resumed run sees exactly the batches an uninterrupted run sees).
* :class:`StepModule` runs the forward passes: the LoRA policy and the frozen reference (the same
  weights, adapter disabled) on the truncated model for the representation losses, and the full
  model for the cross-entropy rows, taking LM-head logits only where a target token follows.
* :meth:`Trainer.compute_loss` turns those outputs into the loss with the pure functions of
  :mod:`mosr.training.losses`.
* :meth:`Trainer.train` is the loop: schedule, optimizer, checkpoints, logging, progress.

Everything goes through ``accelerate.Accelerator``, so ``accelerate launch`` runs the same code on
several processes (each process draws its own batches; gradients are averaged).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mosr import __version__
from mosr.errors import ConfigError, RunError, TrainingError
from mosr.models import ADAPTER_META, LoadedModel, encode_chat_pair, format_prompt, num_layers, template_prefix_length
from mosr.progress import progress
from mosr.runs import RunDir, atomic_write_text
from mosr.training import losses
from mosr.training.batches import (  # noqa: F401 (re-exported)
    Encoded, StepInputs, StepModule, _answer_labels, _first_target, _pad, _prompt_mask, _scope_mask, eval_mode,
)
from mosr.training.caa import build_row, refusal_text, sample_prefix_length, sentence_ends
from mosr.training.curves import fmt_cell, plot_losses
from mosr.training.config import TrainConfig
from mosr.training.data import Pair, TrainingData
from mosr.training.model import add_lora
from mosr.training.reference import ReferenceStats

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TERMS = ("erase", "retain", "separation", "refusal_ce", "ce_retain", "compliance_ce")
LOSS_COLUMNS = ("step", "lr", "c_ret", "c_erase", "beta", "loss", *TERMS, "tokens", "seconds")
REFUSAL, BENIGN, COMPLIANCE = 0, 1, 2  # cross-entropy row groups


# ------------------------------------------------------------------------------------------ trainer
@dataclass
class TrainResult:
    out: Path
    steps: int
    history: list[dict[str, float]]
    seconds: float
    tokens_per_s: float
    is_main_process: bool = True


class Trainer(ReferenceStats):
    """Holds the model, data, optimizer and run folder of one training run."""

    def __init__(self, loaded: LoadedModel, cfg: TrainConfig, data: TrainingData, out: str | Path, *, accelerator: Any = None) -> None:
        from accelerate import Accelerator

        self.cfg = cfg
        self.spec = cfg.spec
        self.loaded = loaded
        self.data = data
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.run = RunDir(out)
        self.tok = loaded.tokenizer
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        self.shared_prefix = template_prefix_length(self.tok)
        n = num_layers(loaded.model)
        cfg.check_model(n)
        self.n_layers = n
        self.target_layers = cfg.resolved_target_layers(n)
        self.lora_layers = cfg.resolved_lora_layers(n)
        if not isinstance(loaded.model, nn.Module) or hasattr(loaded.model, "peft_config"):
            raise TrainingError("train needs a base model without an adapter; load it without --adapter")
        self.peft_model = add_lora(loaded.model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                   modules=cfg.lora_modules, layers=self.lora_layers, seed=cfg.seed,
                                   b_init_std=cfg.lora_b_init_std)
        self.peft_model.train()
        self.params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self._encode_all()
        self.retain_pool = self.benign + (self.pseudo if self.spec.pseudo_retain else [])
        self.erase_weights = torch.ones(len(self.malicious))
        self.rep_mean: torch.Tensor | None = None  # [len(norm_layers), D] reference statistics (rep_norm)
        self.rep_std: torch.Tensor | None = None
        self.norm_layers = sorted(set(self.target_layers) | ({cfg.resolved_oalw_layer(n)} if self.spec.oalw else set()))
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step_module = StepModule(self.peft_model, self.target_layers, cfg.truncate and self.spec.rep_loss)
        self.step_module, self.optimizer = self.accelerator.prepare(self.step_module, self.optimizer)
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------------------- encoding
    def _encode_pairs(self, pairs: list[Pair]) -> list[tuple[Pair, Encoded]]:
        out = []
        for p in pairs:
            ids, n_prompt = encode_chat_pair(self.tok, p.prompt, p.response, max_length=self.cfg.max_length)
            out.append((p, Encoded(ids, n_prompt)))
        return out

    def _encode_all(self) -> None:
        self.malicious = self._encode_pairs(self.data.malicious)
        self.benign = self._encode_pairs(self.data.benign)
        self.pseudo = self._encode_pairs(self.data.pseudo)
        self.oalw_pseudo = self.pseudo + (self._encode_pairs(self.data.pseudo_refused) if self.cfg.oalw_reference == "all" else [])
        eos = self.tok.eos_token or ""
        self.refusal_ids = [
            (self.tok(refusal_text(t, after_prefix=False) + eos, add_special_tokens=False)["input_ids"],
             self.tok(refusal_text(t, after_prefix=True) + eos, add_special_tokens=False)["input_ids"])
            for t in self.data.refusals
        ]
        self.prompt_ids = {p.id: self.tok(format_prompt(self.tok, p.prompt), add_special_tokens=False)["input_ids"] for p, _ in self.malicious}
        self.response_ids = {p.id: self.tok(p.response, add_special_tokens=False)["input_ids"] for p, _ in self.malicious}
        self.sentences = {p.id: sentence_ends(p.response) for p, _ in self.malicious} if self.cfg.caa_unit == "sentences" else {}
        if self.spec.refusal_ce and self.malicious:
            longest = max(len(a) for pair in self.refusal_ids for a in pair)
            too_long = sum(len(ids) + longest > self.cfg.max_length for ids in self.prompt_ids.values())
            if too_long == len(self.prompt_ids):
                raise ConfigError(f"max_length {self.cfg.max_length} is too small: no malicious prompt fits together with a refusal")
            if too_long:
                log.warning("%d of %d malicious prompts may not fit with the longest refusal in max_length=%d; such refusal rows are skipped",
                            too_long, len(self.prompt_ids), self.cfg.max_length)

    # ---------------------------------------------------------------------------- batches
    def _rng(self, step: int) -> random.Random:
        return random.Random((self.cfg.seed * 1_000_003 + step) * 131 + self.accelerator.process_index)

    def _refusal_row(self, rng: random.Random, pair: Pair) -> tuple[list[int], list[int]] | None:
        resp = self.response_ids[pair.id]
        k = 0
        if self.spec.caa:
            if self.cfg.caa_unit == "sentences":
                ends = self.sentences[pair.id]
                k_s = sample_prefix_length(rng, len(ends), zero_share=self.cfg.caa_zero_share, max_prefix=self.cfg.caa_max_prefix)
                prefix = self.tok(pair.response[: ends[k_s - 1]], add_special_tokens=False)["input_ids"] if k_s else []
            else:
                k = sample_prefix_length(rng, len(resp), zero_share=self.cfg.caa_zero_share, max_prefix=self.cfg.caa_max_prefix)
                prefix = resp[:k]
        else:
            prefix = []
        plain, after = self.refusal_ids[rng.randrange(len(self.refusal_ids))]
        row = build_row(self.prompt_ids[pair.id], prefix, after if prefix else plain, max_length=self.cfg.max_length)
        return None if row is None else (row.input_ids, row.labels)

    def make_inputs(self, step: int) -> StepInputs:
        """The rows of step ``step``: a pure function of (seed, step, process index)."""
        rng = self._rng(step)
        cfg, bs = self.cfg, self.cfg.batch_size
        inp = StepInputs()
        ce_rows: list[tuple[list[int], list[int], int, float]] = []  # ids, labels, group, weight
        if self.spec.refusal_ce:
            for i in rng.sample(range(len(self.malicious)), min(bs, len(self.malicious))):
                row = self._refusal_row(rng, self.malicious[i][0])
                if row is not None:
                    weight = float(self.erase_weights[i]) if cfg.oalw_on_refusal else 1.0
                    ce_rows.append((row[0], row[1], REFUSAL, weight))
        if self.spec.ce_retain or cfg.retain_gamma > 0:
            for i in rng.sample(range(len(self.benign)), min(bs, len(self.benign))):
                e = self.benign[i][1]
                ce_rows.append((e.ids, _answer_labels(e), BENIGN, 1.0))
        if self.spec.rep_loss:
            erase_idx = rng.sample(range(len(self.malicious)), min(bs, len(self.malicious)))
            retain_idx = rng.sample(range(len(self.retain_pool)), min(bs, len(self.retain_pool)))
            erase = [self.malicious[i][1] for i in erase_idx]
            retain = [self.retain_pool[i][1] for i in retain_idx]
            refusals: list[Encoded] = []
            if cfg.caa_in_retain:  # the refusal tokens only: the harmful prompt and prefix before them are being erased
                refusals = [Encoded(ids, _first_target(labels)) for ids, labels, g, _ in ce_rows if g == REFUSAL]
            boundary: list[Encoded] = []
            if self.spec.separation:
                boundary_idx = rng.sample(range(len(self.pseudo)), min(bs, len(self.pseudo)))
                boundary = [self.pseudo[i][1] for i in boundary_idx]
                inp.info["boundary_ids"] = [self.pseudo[i][0].id for i in boundary_idx]
            rows = erase + retain + refusals + boundary
            inp.rep_ids = _pad([r.ids for r in rows], self.pad_id)
            inp.rep_mask = _pad([[1] * len(r.ids) for r in rows], 0)
            width = inp.rep_ids.shape[1]
            scope = cfg.retain_tokens
            inp.erase_mask = _scope_mask(erase, width, cfg.erase_tokens, cfg.skip_first_token, self.shared_prefix)
            inp.retain_mask = torch.cat([_scope_mask(retain, width, scope, cfg.skip_first_token, self.shared_prefix),
                                         _scope_mask(refusals, width, "response", cfg.skip_first_token, self.shared_prefix),
                                         _scope_mask(boundary, width, scope, cfg.skip_first_token, self.shared_prefix)])
            if boundary:  # X-Boundary: prompt tokens are pushed off the anchor of the same prompt with its compliant answer
                inp.sep_mask = _prompt_mask(boundary, width, self.shared_prefix, cfg.skip_first_token)
                inp.anchor_mask = inp.retain_mask[-len(boundary):].clone()
            inp.erase_weights = self.erase_weights[erase_idx]
            inp.n_tokens += int(inp.rep_mask.sum())
            inp.info["erase_ids"] = [self.malicious[i][0].id for i in erase_idx]
        if cfg.compliance_gamma > 0 and self.pseudo:
            for i in rng.sample(range(len(self.pseudo)), min(bs, len(self.pseudo))):
                e = self.pseudo[i][1]
                ce_rows.append((e.ids, _answer_labels(e), COMPLIANCE, 1.0))
        if ce_rows:
            inp.ce_ids = _pad([r[0] for r in ce_rows], self.pad_id)
            inp.ce_mask = _pad([[1] * len(r[0]) for r in ce_rows], 0)
            labels = _pad([r[1] for r in ce_rows], self.pad_id, fill=losses.IGNORE_INDEX)
            inp.ce_positions, inp.ce_targets = losses.shifted_targets(labels)
            groups = torch.tensor([r[2] for r in ce_rows]).unsqueeze(1).expand_as(labels)
            inp.ce_groups = groups[inp.ce_positions]
            row_weights = torch.tensor([r[3] for r in ce_rows], dtype=torch.float32).unsqueeze(1).expand_as(labels)
            inp.ce_weights = row_weights[inp.ce_positions]
            inp.n_tokens += int(inp.ce_mask.sum())
        return inp

    # ------------------------------------------------------------------------------- loss
    def compute_loss(self, outputs: dict[str, torch.Tensor], inp: StepInputs, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The step's loss from the forward outputs; all maths lives in :mod:`mosr.training.losses`."""
        cfg = self.cfg
        span = cfg.xb_schedule_span if self.spec.separation else 2.0
        c_ret, c_erase = losses.schedule(step, cfg.steps, cfg.alpha, span)
        c_ret = max(c_ret * cfg.retain_scale, cfg.c_ret_floor)  # logged as used
        beta = cfg.refusal_beta * losses.ramp(step, cfg.beta_warmup_steps)
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        if "h_policy" in outputs:
            assert inp.erase_mask is not None and inp.retain_mask is not None and inp.erase_weights is not None
            b_e = inp.erase_mask.shape[0]
            hp = self.normalize(outputs["h_policy"], self.target_layers)
            hr = self.normalize(outputs["h_ref"], self.target_layers)
            per = losses.erase_per_sample(hp[:, :b_e], hr[:, :b_e], inp.erase_mask)
            terms["erase"] = losses.weighted_erase(per, inp.erase_weights, cfg.oalw_normalize)
            terms["retain"] = losses.retain_loss(hp[:, b_e:], hr[:, b_e:], inp.retain_mask)
            weights["erase"], weights["retain"] = c_erase, c_ret
            if inp.sep_mask is not None and inp.anchor_mask is not None:
                b_b = inp.sep_mask.shape[0]
                anchors = losses.mean_unit(hr[:, -b_b:], inp.anchor_mask)
                terms["separation"] = losses.separation_per_sample(hp[:, -b_b:], anchors, inp.sep_mask).mean()
                weights["separation"] = c_erase * cfg.xb_separation_weight
        if "logits" in outputs:
            assert inp.ce_groups is not None and inp.ce_targets is not None and inp.ce_weights is not None
            retain_weight = cfg.sft_retain_weight if self.spec.ce_retain else cfg.retain_gamma
            groups = ((REFUSAL, "refusal_ce", beta), (BENIGN, "ce_retain", retain_weight), (COMPLIANCE, "compliance_ce", cfg.compliance_gamma))
            for group, name, weight in groups:
                sel = inp.ce_groups == group
                if bool(sel.any()):
                    if group == REFUSAL and cfg.oalw_on_refusal:
                        terms[name] = losses.weighted_token_cross_entropy(outputs["logits"][sel], inp.ce_targets[sel], inp.ce_weights[sel],
                                                                          cfg.oalw_normalize)
                    else:
                        terms[name] = losses.token_cross_entropy(outputs["logits"][sel], inp.ce_targets[sel])
                    weights[name] = weight
        loss = losses.combine(terms, weights)
        parts = {k: float(v.detach()) for k, v in terms.items()}
        parts.update(c_ret=c_ret, c_erase=c_erase, beta=beta)
        return loss, parts

    # ---------------------------------------------------------------------------- checkpoints
    def _lr(self, step: int) -> float:
        if self.cfg.warmup_steps and step < self.cfg.warmup_steps:
            return self.cfg.lr * (step + 1) / self.cfg.warmup_steps
        return self.cfg.lr

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone().contiguous() for n, p in unwrap_peft_model(self.step_module, self.accelerator).named_parameters() if p.requires_grad}

    def save_checkpoint(self, step: int) -> Path | None:
        """Adapter weights, optimizer, RNG and loss history after ``step`` completed steps."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        from safetensors.torch import save_file

        root = self.run / CHECKPOINT_DIR
        final = root / f"step-{step:06d}"
        tmp = root / f".tmp-step-{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(self._trainable_state(), str(tmp / "adapter.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        state = {"step": step, "config_digest": self.cfg.digest(), "history": self.history}
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("step-*"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        found = sorted((self.run / CHECKPOINT_DIR).glob("step-*"))
        return found[-1] if found else None

    def load_checkpoint(self, path: Path) -> int:
        from safetensors.torch import load_file

        state = json.loads((path / "state.json").read_text())
        if state["config_digest"] != self.cfg.digest():
            raise RunError(f"{path} was written with a different config; resume with the same config (only steps may change)")
        weights = load_file(str(path / "adapter.safetensors"))
        params = dict(unwrap_peft_model(self.step_module, self.accelerator).named_parameters())
        missing = [n for n in weights if n not in params]
        if missing:
            raise RunError(f"{path}: checkpoint has unknown parameter {missing[0]}")
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True)["torch"])
        self.history = [h for h in state["history"] if h["step"] < state["step"]]
        return int(state["step"])

    # ------------------------------------------------------------------------------- loop
    def train(self, *, resume: bool | str = False, stop_after: int | None = None) -> TrainResult:
        """Run the steps. ``stop_after``: stop after that many steps of the ``cfg.steps`` schedule and keep
        them as a checkpoint (the schedule is still that of ``cfg.steps``; resume to finish). The config key
        ``stop_after`` instead ends the run there: its adapter is saved at that step as a finished one."""
        cfg, acc = self.cfg, self.accelerator
        end = last_step(stop_after, cfg.end_step)
        start = 0
        if resume:
            ckpt = self.latest_checkpoint()
            if ckpt is None:
                (log.warning if resume is True else log.info)("no checkpoint in %s yet; starting from step 0", self.run.path)
            else:
                start = self.load_checkpoint(ckpt)
                log.info("resumed from %s (step %d)", ckpt, start)
        elif self.latest_checkpoint() is not None:
            raise RunError(f"{self.run.path} already has checkpoints; pass --resume to continue or choose a new --out")
        if start > end:
            raise RunError(f"{self.run.path} is at step {start}, past stop_after={end}; export that checkpoint or choose a new --out")
        self.setup_rep_norm()
        self.setup_oalw()
        last_good = self.latest_checkpoint()
        t0 = time.perf_counter()
        tokens_total = 0
        bar = progress(total=end, initial=min(start, end), desc=f"train {cfg.method}", unit="step") if acc.is_main_process else None
        try:
            for step in range(start, end):
                t_step = time.perf_counter()
                torch.manual_seed((cfg.seed * 1_000_003 + step) * 131 + acc.process_index)  # LoRA dropout, per step
                inp = self.make_inputs(step).to(acc.device)
                for group in self.optimizer.param_groups:
                    group["lr"] = self._lr(step)
                outputs = self.step_module(inp)
                loss, parts = self.compute_loss(outputs, inp, step)
                finite = acc.gather(torch.isfinite(loss.detach()).float().reshape(1)).min().item() > 0
                if not finite:
                    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
                    raise TrainingError(
                        f"step {step}: non-finite loss ({', '.join(f'{k}={v:.4g}' for k, v in parts.items())}); {where}. "
                        "Lower lr or alpha and train into a new --out (a resumed run must keep its config)"
                    )
                acc.backward(loss)
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                n_cols = 1 + len(TERMS)
                stats = torch.tensor([float(loss.detach())] + [parts.get(k, float("nan")) for k in TERMS] + [inp.n_tokens])
                stats = acc.gather(stats.to(acc.device).reshape(1, -1)).cpu()
                mean = stats[:, :n_cols].nanmean(0) if stats.shape[0] > 1 else stats[0, :n_cols]
                n_tok = int(stats[:, n_cols].sum())
                tokens_total += n_tok
                dt = time.perf_counter() - t_step
                record = {"step": step, "lr": self._lr(step), "c_ret": parts["c_ret"], "c_erase": parts["c_erase"], "beta": parts["beta"],
                          "loss": float(mean[0]), **{k: float(mean[1 + j]) for j, k in enumerate(TERMS)}, "tokens": n_tok, "seconds": dt}
                self.history.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{n_tok / dt:.0f}")
                done = step + 1
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < end:  # `end` is saved below
                    last_good = self.save_checkpoint(done) or last_good
                    self.write_curves()
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        if end < cfg.end_step:
            self.save_stopped(end)  # stopped early: the steps so far are a checkpoint, not a finished adapter
        else:
            self.save_final(end)  # all steps, or the end the config sets
        return TrainResult(self.run.path, end, self.history, seconds, tokens_total / max(seconds, 1e-9), acc.is_main_process)

    # ------------------------------------------------------------------------------ outputs
    def write_curves(self) -> None:
        if not self.accelerator.is_main_process:
            return
        lines = [",".join(LOSS_COLUMNS)] + [",".join(fmt_cell(h.get(c)) for c in LOSS_COLUMNS) for h in self.history]
        atomic_write_text(self.run / "losses.csv", "\n".join(lines) + "\n")
        plot_losses(self.run / "losses.png", self.history, self.cfg.method, TERMS)

    def save_final(self, step: int) -> None:
        """Adapter (peft format) + ``mosr_adapter.json`` + final checkpoint (``step``) + curves, in the run folder."""
        self.save_checkpoint(step)
        if not self.accelerator.is_main_process:
            return
        model = unwrap_peft_model(self.step_module, self.accelerator)
        model.save_pretrained(str(self.run.path))
        readme = self.run / "README.md"
        if readme.is_file():
            readme.unlink()  # peft's generic model card says nothing about this run; run.json does
        self._write_adapter_meta()

    def save_stopped(self, step: int) -> None:
        """A run stopped after ``step`` steps: checkpoint ``step``, the curves, the adapter config and
        ``mosr_adapter.json``, but no adapter weights, so nothing loads it as a finished adapter;
        :func:`mosr.training.export_checkpoint` turns the checkpoint into one."""
        self.save_checkpoint(step)
        if not self.accelerator.is_main_process:
            return
        model = unwrap_peft_model(self.step_module, self.accelerator)
        for config in model.peft_config.values():
            config.save_pretrained(str(self.run.path))
        self._write_adapter_meta(stopped_after=step)

    def _write_adapter_meta(self, **extra: Any) -> None:
        """``mosr_adapter.json``, then the curves (main process only)."""
        meta = {"base_spec": self.loaded.spec, "base_fingerprint": self.loaded.fingerprint, "method": self.cfg.method,
                "config": self.cfg.to_dict(), "mosr_version": __version__, "target_layers": self.target_layers,
                "lora_layers": self.lora_layers, **extra}
        self.run.write_json(ADAPTER_META, meta)
        self.write_curves()


def last_step(stop_after: int | None, steps: int) -> int:
    """The step a run ends after: ``steps`` (the config's ``end_step``), or ``stop_after`` when it is in 1..steps."""
    if stop_after is None:
        return steps
    if not 1 <= stop_after <= steps:
        raise ConfigError(f"stop_after must be in 1..steps ({steps}), got {stop_after}")
    return stop_after


def unwrap_peft_model(step_module: nn.Module, accelerator: Any) -> nn.Module:
    return accelerator.unwrap_model(step_module).model
