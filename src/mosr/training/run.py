"""``train``: check the folder and the inputs, then run a :class:`~mosr.training.trainer.Trainer`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from mosr.errors import ConfigError, MosrError, RunError
from mosr.models import LoadedModel, load_model, num_layers
from mosr.runs import LOCK_FILE, RunDir, check_run_kind
from mosr.training.config import TrainConfig
from mosr.training.data import TrainingData, build_training_data, save_pairs
from mosr.training.trainer import CHECKPOINT_DIR, Trainer, TrainResult, last_step, unwrap_peft_model

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
          data: TrainingData | None = None, command: str = "mosr train", stop_after: int | None = None) -> TrainResult:
    """Train ``cfg.method`` on ``cfg.model`` (or ``loaded``) and write the adapter run folder ``out``.

    ``resume``: ``True`` continues the run in ``out`` (refused when there is none, or when the config
    changed), ``"auto"`` continues it when there is one, ``False`` starts a new run. A refused command
    writes nothing. After it returns, ``loaded.model`` is the trained peft model and ``loaded.adapter``
    points to ``out``. ``stop_after``: stop after that many steps of the schedule and keep them as a
    checkpoint (``mosr.training.export_checkpoint`` makes it an adapter); no final adapter is written.
    """
    from accelerate import Accelerator

    if resume not in (True, False, "auto"):
        raise ConfigError(f"resume must be True, False or 'auto', got {resume!r}")
    last_step(stop_after, cfg.end_step)  # before the model loads and the training data is built
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
            return _accepted_train(cfg, run, resume, loaded, data, accelerator, command, fresh, stop_after)
    except MosrError:
        if accelerator.is_main_process and not existed and [p.name for p in run.path.iterdir()] == [LOCK_FILE]:
            (run / LOCK_FILE).unlink()
            run.path.rmdir()  # a command refused before it wrote anything leaves no folder behind
        raise


def _accepted_train(cfg: TrainConfig, run: RunDir, resume: bool | str, loaded: LoadedModel, data: TrainingData, accelerator: Any,
                    command: str, fresh: bool, stop_after: int | None = None) -> TrainResult:
    """Write the metadata, then train; a failed first run takes its metadata back."""
    trainer = Trainer(loaded, cfg, data, run.path, accelerator=accelerator)
    try:
        if accelerator.is_main_process:
            run.write_metadata(command=command, config=cfg.to_dict(), seed=cfg.seed, data_hashes=data.hashes, model=loaded.describe(),
                               extra={"training_data": data.describe(), "target_layers": trainer.target_layers,
                                      "lora_layers": trainer.lora_layers, "processes": accelerator.num_processes})
            run.write_text("train_data.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in save_pairs(data)))
        result = trainer.train(resume=resume, stop_after=stop_after)
    except MosrError:
        if fresh and accelerator.is_main_process and trainer.latest_checkpoint() is None:
            for name in ("run.json", "train_data.jsonl"):
                (run / name).unlink(missing_ok=True)  # a failed first run leaves no metadata that claims a run
        raise
    if accelerator.is_main_process:
        meta = run.read_json("run.json")
        meta["result"] = {"steps": result.steps, "seconds": round(result.seconds, 1), "tokens_per_s": round(result.tokens_per_s, 1),
                          "final": result.history[-1] if result.history else None}
        if result.steps < cfg.end_step:
            meta["result"]["stopped_after"] = result.steps  # of a cfg.steps schedule: a checkpoint, no final adapter
        run.write_json("run.json", meta)
    loaded.model = unwrap_peft_model(trainer.step_module, accelerator)
    loaded.model.eval()
    loaded.adapter = str(run.path)
    return result
