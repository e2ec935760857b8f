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

import contextlib
import csv
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mosr import __version__
from mosr.errors import ConfigError, MosrError, RunError, TrainingError
from mosr.models import ADAPTER_META, LoadedModel, encode_chat_pair, format_prompt, num_layers, template_prefix_length
from mosr.plots import plt
from mosr.progress import progress
from mosr.runs import LOCK_FILE, RunDir, atomic_write_text, check_run_kind
from mosr.training import losses, oalw
from mosr.training.caa import build_row, refusal_text, sample_prefix_length, sentence_ends
from mosr.training.config import TrainConfig
from mosr.training.data import Pair, TrainingData
from mosr.training.model import add_lora, backbone, hidden_at, output_head

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
TERMS = ("erase", "retain", "separation", "refusal_ce", "ce_retain", "compliance_ce")
LOSS_COLUMNS = ("step", "lr", "c_ret", "c_erase", "beta", "loss", *TERMS, "tokens", "seconds")
REFUSAL, BENIGN, COMPLIANCE = 0, 1, 2  # cross-entropy row groups


# ------------------------------------------------------------------------------------------ encoding
@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    n_prompt: int


@dataclass
class StepInputs:
    """Tensors of one step. ``rep_*`` rows are erase rows first, then retain rows."""

    rep_ids: torch.Tensor | None = None
    rep_mask: torch.Tensor | None = None
    erase_mask: torch.Tensor | None = None  # [B_e, S] tokens in the erase loss
    retain_mask: torch.Tensor | None = None  # [B_r, S] tokens in the retain loss
    erase_weights: torch.Tensor | None = None  # [B_e] OALW weights
    sep_mask: torch.Tensor | None = None  # [B_b, S] boundary-safe prompt tokens of the separation term (last B_b rep rows)
    anchor_mask: torch.Tensor | None = None  # [B_b, S] tokens whose reference states give the separation anchor
    ce_ids: torch.Tensor | None = None
    ce_mask: torch.Tensor | None = None
    ce_positions: torch.Tensor | None = None  # [B_c, S] bool: logits taken here
    ce_targets: torch.Tensor | None = None  # [N]
    ce_groups: torch.Tensor | None = None  # [N] REFUSAL, BENIGN or COMPLIANCE
    ce_weights: torch.Tensor | None = None  # [N] per-token weight (the row's OALW weight with oalw_on_refusal, else 1)
    n_tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> StepInputs:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


def _pad(rows: list[list[int]], pad_id: int, fill: int | None = None) -> torch.Tensor:
    width = max(len(r) for r in rows)
    value = pad_id if fill is None else fill
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _scope_mask(rows: list[Encoded], width: int, scope: str, skip_first: bool = False, shared_prefix: int = 0) -> torch.Tensor:
    """``[B, width]`` tokens that enter a representation loss.

    ``all``: every token; ``content``: all but the first ``shared_prefix`` tokens (the chat-template
    prefix that every prompt shares); ``response``: the response only; ``response_and_last_prompt``:
    the response and the last prompt token. ``skip_first`` also drops position 0 (attention sink).
    """
    m = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        start = 0
        if scope == "response" and r.n_prompt < len(r.ids):
            start = r.n_prompt
        elif scope == "response_and_last_prompt":
            start = max(min(r.n_prompt, len(r.ids)) - 1, 0)
        elif scope == "content":
            start = min(shared_prefix, max(r.n_prompt - 1, 0))
        m[i, max(start, int(skip_first)) : len(r.ids)] = 1
    return m


def _prompt_mask(rows: list[Encoded], width: int, shared_prefix: int, skip_first: bool) -> torch.Tensor:
    """``[B, width]`` prompt tokens after the shared chat-template prefix (the X-Boundary separation tokens)."""
    m = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        start = max(min(shared_prefix, max(r.n_prompt - 1, 0)), int(skip_first))
        m[i, start : r.n_prompt] = 1
    return m


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (no dropout) inside the block; restore its train/eval mode on exit.

    The reference passes (adapter disabled) must be the deterministic base model even while the
    policy trains with dropout.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _answer_labels(e: Encoded) -> list[int]:
    """Labels on the answer tokens only (prompt masked)."""
    return [losses.IGNORE_INDEX] * e.n_prompt + e.ids[e.n_prompt :]


def _first_target(labels: list[int]) -> int:
    """Index of the first trained token of a row (the start of the refusal after prompt and prefix)."""
    return next((i for i, t in enumerate(labels) if t != losses.IGNORE_INDEX), len(labels))


# ------------------------------------------------------------------------------------------ forward
class StepModule(nn.Module):
    """The forward passes of one step; wraps the peft model so that DDP sees a single forward."""

    def __init__(self, model: nn.Module, target_layers: list[int], truncate: bool) -> None:
        super().__init__()
        self.model = model
        self.target_layers = list(target_layers)
        self.truncate = truncate

    def forward(self, inputs: StepInputs) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if inputs.rep_ids is not None:
            out["h_policy"] = hidden_at(self.model, inputs.rep_ids, inputs.rep_mask, self.target_layers, truncate=self.truncate)
            with torch.no_grad(), self.model.disable_adapter(), eval_mode(self.model):
                out["h_ref"] = hidden_at(self.model, inputs.rep_ids, inputs.rep_mask, self.target_layers, truncate=self.truncate)
        if inputs.ce_ids is not None:
            last = backbone(self.model)(input_ids=inputs.ce_ids, attention_mask=inputs.ce_mask, use_cache=False).last_hidden_state
            out["logits"] = output_head(self.model)(last[inputs.ce_positions])
        return out


# ------------------------------------------------------------------------------------------ trainer
@dataclass
class TrainResult:
    out: Path
    steps: int
    history: list[dict[str, float]]
    seconds: float
    tokens_per_s: float
    is_main_process: bool = True


class Trainer:
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

    # --------------------------------------------------------------------------- rep_norm
    def _norm_rows(self, layers: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.rep_mean is None or self.rep_std is None:
            return None
        idx = [self.norm_layers.index(layer) for layer in layers]
        return self.rep_mean[idx], self.rep_std[idx]

    def normalize(self, h: torch.Tensor, layers: list[int]) -> torch.Tensor:
        """``h`` ``[L, ..., D]`` at ``layers``, standardised with the reference statistics (unchanged for ``rep_norm: none``)."""
        stats = self._norm_rows(layers)
        if stats is None:
            return h
        return losses.standardize(h, stats[0].to(h.device), stats[1].to(h.device), unit=self.cfg.rep_norm == "unit")

    def setup_rep_norm(self) -> None:
        """Estimate (or, on resume, read back) the per-layer, per-dimension mean and std of the reference states.

        Rows: ``rep_norm_rows`` drawn with a seed that does not depend on the process, half malicious
        and half retain, all tokens except the first (with ``skip_first_token``). Adapter disabled, no grad.
        """
        if self.cfg.rep_norm == "none" or not (self.spec.rep_loss or self.spec.oalw):
            return
        from safetensors.torch import load_file, save_file

        path = self.run / "rep_norm.safetensors"
        key = self._cache_key("rep_norm")
        with self.accelerator.main_process_first():
            if path.is_file():
                try:
                    from safetensors import safe_open

                    with safe_open(str(path), framework="pt") as fh:
                        stored = (fh.metadata() or {}).get("key")
                    t = load_file(str(path))
                except Exception:  # a torn or foreign file is computed again
                    stored = None
                if stored == key and t["layers"].tolist() == self.norm_layers:
                    self.rep_mean, self.rep_std = t["mean"], t["std"]
                    return
                log.info("%s was made with other settings; computing it again", path)
            rng = random.Random(self.cfg.seed * 7919 + 17)
            half = max(1, self.cfg.rep_norm_rows // 2)
            rows = [self.malicious[i][1] for i in rng.sample(range(len(self.malicious)), min(half, len(self.malicious)))]
            rows += [self.retain_pool[i][1] for i in rng.sample(range(len(self.retain_pool)), min(half, len(self.retain_pool)))]
            width = max(len(r.ids) for r in rows)
            device = self.accelerator.device
            hs, ms = [], []
            with torch.no_grad(), self.peft_model.disable_adapter(), eval_mode(self.peft_model):
                for start in progress(range(0, len(rows), 8), desc="rep_norm statistics", unit="batch"):
                    chunk = rows[start : start + 8]
                    ids = _pad([r.ids for r in chunk], self.pad_id).to(device)
                    mask = _pad([[1] * len(r.ids) for r in chunk], 0).to(device)
                    h = hidden_at(self.peft_model, ids, mask, self.norm_layers, truncate=True).float().cpu()
                    hs.append(torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[2])))
                    ms.append(_scope_mask(chunk, width, "all", self.cfg.skip_first_token))
            self.rep_mean, self.rep_std = losses.rep_stats(torch.cat(hs, dim=1), torch.cat(ms, dim=0))
            if self.accelerator.is_main_process:
                tmp = path.with_name(f".{path.name}.tmp")
                save_file({"layers": torch.tensor(self.norm_layers), "mean": self.rep_mean.contiguous(), "std": self.rep_std.contiguous()},
                          str(tmp), metadata={"key": key})
                tmp.replace(path)

    # ------------------------------------------------------------------------------- OALW
    def setup_oalw(self) -> None:
        """Compute (or, on resume, read back) the OALW weight of every malicious sample."""
        if not self.spec.oalw:
            return
        path = self.run / "oalw_weights.csv"
        sidecar = self.run / "oalw_weights.json"
        ids = [p.id for p, _ in self.malicious]
        key = self._cache_key("oalw")
        with self.accelerator.main_process_first():
            if path.is_file() and sidecar.is_file():
                try:
                    stored = json.loads(sidecar.read_text(encoding="utf-8")).get("key")
                    with open(path, encoding="utf-8") as fh:
                        rows = list(csv.DictReader(fh))
                except (OSError, ValueError, AttributeError):
                    stored, rows = None, []
                if stored == key and [r.get("id") for r in rows] == ids:
                    self.erase_weights = torch.tensor([float(r["weight"]) for r in rows])
                    return
                log.info("%s was made with other settings; computing it again", path)
            layer = self.cfg.resolved_oalw_layer(self.n_layers)
            feats_m = self._features([e for _, e in self.malicious], layer)
            feats_p = self._features([e for _, e in self.pseudo], layer)
            sim = oalw.similarity(feats_m, feats_p, self.cfg.oalw_similarity, self.cfg.oalw_k)
            w = oalw.weights(sim, self.cfg.oalw_tau, self.cfg.oalw_sign)
            if self.cfg.oalw_shuffle:  # control: same weights, no link to overlap
                w = oalw.shuffled(w, self.cfg.seed)
            self.erase_weights = w.float()
            if self.accelerator.is_main_process:
                sidecar.unlink(missing_ok=True)  # the key goes last: a torn update is never mistaken for a valid cache
                lines = ["id,source,similarity,weight"] + [
                    f"{p.id},{p.source},{s:.6f},{x:.6f}" for (p, _), s, x in zip(self.malicious, sim.tolist(), w.tolist())
                ]
                atomic_write_text(path, "\n".join(lines) + "\n")
                atomic_write_text(sidecar, json.dumps({"key": key, "inputs": self._cache_inputs("oalw")}, indent=1) + "\n")
                _plot_weights(self.run / "oalw_weights.png", sim.tolist(), w.tolist(), self.cfg)

    # ------------------------------------------------------------------------- cache keys
    def _cache_inputs(self, what: str) -> dict[str, Any]:
        """Everything a derived file (``rep_norm`` statistics, OALW weights) depends on."""
        cfg = self.cfg
        inputs: dict[str, Any] = {
            "base": self.loaded.fingerprint, "data": self.data.hashes, "max_length": cfg.max_length,
            "skip_first_token": cfg.skip_first_token, "malicious": [p.id for p, _ in self.malicious],
        }
        if what == "rep_norm":
            inputs.update(layers=self.norm_layers, rows=cfg.rep_norm_rows, seed=cfg.seed,
                          retain=[p.id for p, _ in self.retain_pool])
        else:
            inputs.update(layer=cfg.resolved_oalw_layer(self.n_layers), pooling=cfg.oalw_pooling, similarity=cfg.oalw_similarity,
                          k=cfg.oalw_k, tau=cfg.oalw_tau, sign=cfg.oalw_sign, pseudo=[p.id for p, _ in self.pseudo],
                          rep_norm=cfg.rep_norm, rep_norm_key=self._cache_key("rep_norm") if cfg.rep_norm != "none" else None)
        return inputs

    def _cache_key(self, what: str) -> str:
        return hashlib.sha256(json.dumps(self._cache_inputs(what), sort_keys=True).encode()).hexdigest()[:16]

    @torch.no_grad()
    def _features(self, rows: list[Encoded], layer: int, batch: int = 16) -> torch.Tensor:
        """Reference-model features at ``layer`` (adapter disabled), pooled as configured."""
        use_prompt_only = self.cfg.oalw_pooling != "mean_all"
        device = self.accelerator.device
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
        out: list[torch.Tensor | None] = [None] * len(rows)
        for start in progress(range(0, len(order), batch), desc="OALW features", unit="batch"):
            idx = order[start : start + batch]
            seqs = [rows[i].ids[: rows[i].n_prompt] if use_prompt_only else rows[i].ids for i in idx]
            ids = _pad(seqs, self.pad_id).to(device)
            mask = _pad([[1] * len(s) for s in seqs], 0).to(device)
            n_prompt = torch.tensor([rows[i].n_prompt for i in idx], device=device)
            with self.peft_model.disable_adapter(), eval_mode(self.peft_model):
                h = hidden_at(self.peft_model, ids, mask, [layer], truncate=True)[0]
            h = self.normalize(h.unsqueeze(0), [layer])[0]
            if self.cfg.oalw_pooling != "last_prompt":  # pool over what differs between samples, not the shared template prefix
                pooled_rows = [Encoded(seq, rows[i].n_prompt) for seq, i in zip(seqs, idx)]
                mask = _scope_mask(pooled_rows, ids.shape[1], "content", self.cfg.skip_first_token, self.shared_prefix).to(device)
            pooled = oalw.pool(h, mask, n_prompt, self.cfg.oalw_pooling)
            for j, i in enumerate(idx):
                out[i] = pooled[j].float().cpu()
        feats = [t for t in out if t is not None]
        return torch.stack(feats)

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
        if self.spec.ce_retain:
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
            groups = ((REFUSAL, "refusal_ce", beta), (BENIGN, "ce_retain", cfg.sft_retain_weight), (COMPLIANCE, "compliance_ce", cfg.compliance_gamma))
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
    def train(self, *, resume: bool | str = False) -> TrainResult:
        cfg, acc = self.cfg, self.accelerator
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
        self.setup_rep_norm()
        self.setup_oalw()
        last_good = self.latest_checkpoint()
        t0 = time.perf_counter()
        tokens_total = 0
        bar = progress(total=cfg.steps, initial=start, desc=f"train {cfg.method}", unit="step") if acc.is_main_process else None
        try:
            for step in range(start, cfg.steps):
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
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    last_good = self.save_checkpoint(done) or last_good
                    self.write_curves()
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        self.save_final()
        return TrainResult(self.run.path, cfg.steps, self.history, seconds, tokens_total / max(seconds, 1e-9), acc.is_main_process)

    # ------------------------------------------------------------------------------ outputs
    def write_curves(self) -> None:
        if not self.accelerator.is_main_process:
            return
        lines = [",".join(LOSS_COLUMNS)] + [",".join(_fmt(h.get(c)) for c in LOSS_COLUMNS) for h in self.history]
        atomic_write_text(self.run / "losses.csv", "\n".join(lines) + "\n")
        _plot_losses(self.run / "losses.png", self.history, self.cfg.method)

    def save_final(self) -> None:
        """Adapter (peft format) + ``mosr_adapter.json`` + final checkpoint + curves, in the run folder."""
        self.save_checkpoint(self.cfg.steps)
        if not self.accelerator.is_main_process:
            return
        model = unwrap_peft_model(self.step_module, self.accelerator)
        model.save_pretrained(str(self.run.path))
        readme = self.run / "README.md"
        if readme.is_file():
            readme.unlink()  # peft's generic model card says nothing about this run; run.json does
        meta = {"base_spec": self.loaded.spec, "base_fingerprint": self.loaded.fingerprint, "method": self.cfg.method,
                "config": self.cfg.to_dict(), "mosr_version": __version__, "target_layers": self.target_layers,
                "lora_layers": self.lora_layers}
        self.run.write_json(ADAPTER_META, meta)
        self.write_curves()


def unwrap_peft_model(step_module: nn.Module, accelerator: Any) -> nn.Module:
    return accelerator.unwrap_model(step_module).model


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _plot_losses(path: Path, history: list[dict[str, float]], method: str) -> None:
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in TERMS:
        ys = [h.get(key, math.nan) for h in history]
        if any(not math.isnan(y) for y in ys):
            axes[0].plot(steps, ys, label=key)
    axes[0].set_title(f"{method}: loss terms")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[1].plot(steps, [h["loss"] for h in history], color="black")
    axes[1].set_title("total loss (with schedule)")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_weights(path: Path, sims: list[float], ws: list[float], cfg: TrainConfig) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].hist(sims, bins=30, color="tab:blue")
    axes[0].set_title(f"{cfg.oalw_similarity} cosine to pseudo-malicious (n={len(sims)})")
    axes[1].hist(ws, bins=30, color="tab:red")
    axes[1].set_title(f"OALW weights (tau={cfg.oalw_tau}, sign={cfg.oalw_sign}, mean={sum(ws) / max(len(ws), 1):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ entry
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_checkpoints")


def check_train_folder(out: str | Path, cfg: TrainConfig, resume: bool | str) -> None:
    """Refuse, before anything is written, a command that cannot continue the run in ``out``.

    ``resume=True`` (``--resume``) needs a training run in ``out`` and its config (only steps and
    checkpointing may change); ``"auto"`` resumes when there is something to resume; ``False`` refuses
    a folder that already has checkpoints.
    """
    out = Path(out)
    check_run_kind(out, "train")
    found = sorted((out / CHECKPOINT_DIR).glob("step-*"))
    meta_file = out / "run.json"
    if not resume:
        if found:
            raise RunError(f"{out} already has checkpoints; pass --resume to continue or choose a new --out")
        return
    if not found:
        if resume is True and not meta_file.is_file():
            raise RunError(f"--resume: {out} holds no training run, so there is nothing to resume; drop --resume to start one there")
        return
    try:
        state = json.loads((found[-1] / "state.json").read_text())
        digest, done = state["config_digest"], int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{found[-1]} is damaged ({exc}); delete it to resume from the checkpoint before it, or use a new --out") from exc
    if done > cfg.steps:
        raise RunError(f"{out} has already trained {done} steps; --steps {cfg.steps} would label that adapter as {cfg.steps} steps: "
                       f"pass --steps {done} or more, or train into a new --out")
    if digest == cfg.digest():
        return
    diff = ""
    try:
        old = json.loads(meta_file.read_text(encoding="utf-8"))["config"]
        new = cfg.to_dict()
        diff = " (" + "; ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items()
                                if old.get(k) != v and k not in _RESUMABLE_CHANGES) + ")"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    raise RunError(f"{out} was trained with a different config{diff}; a resumed run keeps its config (only "
                   f"{', '.join(_RESUMABLE_CHANGES)} may change): resume with the folder's values, or train into a new --out")


def check_resume_inputs(out: str | Path, loaded: LoadedModel, data: TrainingData, resume: bool | str) -> None:
    """Refuse to continue checkpoints made from another base model or other training data."""
    out = Path(out)
    if not resume or not any((out / CHECKPOINT_DIR).glob("step-*")) or not (out / "run.json").is_file():
        return
    meta = RunDir(out, create=False).read_json("run.json")
    old_hashes = meta.get("data_hashes") or {}
    changed = [f"{k} {str(old_hashes.get(k))[:12]} -> {str(v)[:12]}" for k, v in data.hashes.items() if old_hashes.get(k) != v]
    old_model = (meta.get("model") or {}).get("fingerprint")
    if old_model and old_model != loaded.fingerprint:
        changed.insert(0, f"base model {old_model} -> {loaded.fingerprint}")
    if changed:
        raise RunError(f"{out} was trained from other inputs ({'; '.join(changed)}); a resumed run must see the same base model "
                       "and training data: restore them, or train into a new --out")


def train(cfg: TrainConfig, out: str | Path, *, resume: bool | str = False, loaded: LoadedModel | None = None,
          data: TrainingData | None = None, command: str = "mosr train") -> TrainResult:
    """Train ``cfg.method`` on ``cfg.model`` (or ``loaded``) and write the adapter run folder ``out``.

    ``resume``: ``True`` continues the run in ``out`` (refused when there is none, or when the config
    changed), ``"auto"`` continues it when there is one, ``False`` starts a new run. A refused command
    writes nothing. After it returns, ``loaded.model`` is the trained peft model and ``loaded.adapter``
    points to ``out``.
    """
    from accelerate import Accelerator

    from mosr.models import load_model
    from mosr.training.data import build_training_data

    if resume not in (True, False, "auto"):
        raise ConfigError(f"resume must be True, False or 'auto', got {resume!r}")
    check_train_folder(out, cfg, resume)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    if loaded is None:
        loaded = load_model(cfg.model, device=accelerator.device)
    cfg.check_model(num_layers(loaded.model))
    if data is None:
        with accelerator.main_process_first():
            # the judge-verdict cache lives in an accepted run's folder; a new run writes nothing before it is accepted
            data = build_training_data(loaded, cfg, run_dir=Path(out) if (Path(out) / "run.json").is_file() else None)
    check_resume_inputs(out, loaded, data, resume)
    fresh, existed = not (Path(out) / "run.json").is_file(), Path(out).exists()
    run = RunDir(out)
    try:
        with run.lock(command) if accelerator.is_main_process else contextlib.nullcontext():
            if accelerator.is_main_process:
                check_train_folder(out, cfg, resume)  # again, now that no other command can change the folder
            return _accepted_train(cfg, run, resume, loaded, data, accelerator, command, fresh)
    except MosrError:
        if accelerator.is_main_process and not existed and [p.name for p in run.path.iterdir()] == [LOCK_FILE]:
            (run / LOCK_FILE).unlink()
            run.path.rmdir()  # a command refused before it wrote anything leaves no folder behind
        raise


def _accepted_train(cfg: TrainConfig, run: RunDir, resume: bool | str, loaded: LoadedModel, data: TrainingData, accelerator: Any,
                    command: str, fresh: bool) -> TrainResult:
    """Write the metadata, then train; a failed first run takes its metadata back."""
    from mosr.training.data import save_pairs

    trainer = Trainer(loaded, cfg, data, run.path, accelerator=accelerator)
    try:
        if accelerator.is_main_process:
            run.write_metadata(command=command, config=cfg.to_dict(), seed=cfg.seed, data_hashes=data.hashes, model=loaded.describe(),
                               extra={"training_data": data.describe(), "target_layers": trainer.target_layers,
                                      "lora_layers": trainer.lora_layers, "processes": accelerator.num_processes})
            run.write_text("train_data.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in save_pairs(data)))
        result = trainer.train(resume=resume)
    except MosrError:
        if fresh and accelerator.is_main_process and trainer.latest_checkpoint() is None:
            for name in ("run.json", "train_data.jsonl"):
                (run / name).unlink(missing_ok=True)  # a failed first run leaves no metadata that claims a run
        raise
    if accelerator.is_main_process:
        meta = run.read_json("run.json")
        meta["result"] = {"steps": result.steps, "seconds": round(result.seconds, 1), "tokens_per_s": round(result.tokens_per_s, 1),
                          "final": result.history[-1] if result.history else None}
        run.write_json("run.json", meta)
    loaded.model = unwrap_peft_model(trainer.step_module, accelerator)
    loaded.model.eval()
    loaded.adapter = str(run.path)
    return result
