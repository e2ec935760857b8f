"""What the frozen reference model tells the trainer before the first step: rep_norm statistics and OALW weights.

:class:`ReferenceStats` is a part of :class:`mosr.training.trainer.Trainer`; both are computed once
per run (adapter disabled, no gradient) and cached in the run folder under a key of their inputs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import torch

from mosr.plots import plt
from mosr.progress import progress
from mosr.runs import atomic_write_text
from mosr.training import losses, oalw
from mosr.training.config import TrainConfig
from mosr.training.model import hidden_at
from mosr.training.batches import Encoded, _pad, _scope_mask, eval_mode

log = logging.getLogger(__name__)


class ReferenceStats:
    """rep_norm statistics and OALW weights of a :class:`~mosr.training.trainer.Trainer`."""

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
            feats_p = self._features([e for _, e in self.oalw_pseudo], layer)
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
                          k=cfg.oalw_k, tau=cfg.oalw_tau, sign=cfg.oalw_sign, pseudo=[p.id for p, _ in self.oalw_pseudo],
                          rep_norm=cfg.rep_norm, rep_norm_key=self._cache_key("rep_norm") if cfg.rep_norm != "none" else None)
            if cfg.oalw_shuffle:  # the control's weights are a seeded permutation (unshuffled runs keep their old keys)
                inputs.update(shuffle_seed=cfg.seed)
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


def _plot_weights(path: Path, sims: list[float], ws: list[float], cfg: TrainConfig) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].hist(sims, bins=30, color="tab:blue")
    axes[0].set_title(f"{cfg.oalw_similarity} cosine to pseudo-malicious ({cfg.oalw_reference} prompts; n={len(sims)} malicious)")
    axes[1].hist(ws, bins=30, color="tab:red")
    axes[1].set_title(f"OALW weights (tau={cfg.oalw_tau}, sign={cfg.oalw_sign}, mean={sum(ws) / max(len(ws), 1):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
