"""Export a training checkpoint as an adapter folder, so an intermediate step can be evaluated.

``export_checkpoint("runs/train-mosr", 20, "runs/train-mosr-step20")`` writes the weights of
``checkpoints/step-000020`` in the peft format of the run's final adapter (``adapter_config.json``,
``adapter_model.safetensors``) with the run's ``mosr_adapter.json`` plus ``checkpoint_step``. The
weights are those the run had after that many steps of *its* schedule: a checkpoint at step 20 of
a 60-step run is not a 20-step run (the loss coefficients of rr and mosr depend on step / steps).
The exported final checkpoint equals the run's own adapter, tensor for tensor (tested).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mosr.errors import RunError
from mosr.models import ADAPTER_META
from mosr.runs import atomic_write_text

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def checkpoint_steps(run: str | Path) -> list[int]:
    """Steps of the checkpoints kept in a training run folder, ascending."""
    from mosr.training.trainer import CHECKPOINT_DIR

    return sorted(int(p.name.split("-")[1]) for p in (Path(run) / CHECKPOINT_DIR).glob("step-*") if p.is_dir())


def export_checkpoint(run: str | Path, step: int, out: str | Path) -> Path:
    """Write checkpoint ``step`` of the training run ``run`` (finished, or stopped with ``stop_after``) as an
    adapter folder ``out``."""
    from safetensors.torch import load_file, save_file

    from mosr.training.trainer import CHECKPOINT_DIR

    run, out = Path(run), Path(out)
    for name in ("adapter_config.json", ADAPTER_META):
        if not (run / name).is_file():
            raise RunError(f"{run} is not a mosr training run (no {name})")
    ckpt = run / CHECKPOINT_DIR / f"step-{step:06d}" / "adapter.safetensors"
    if not ckpt.is_file():
        raise RunError(f"{run} has no checkpoint at step {step}; kept: {checkpoint_steps(run) or 'none'}")
    adapter_name = json.loads((run / "adapter_config.json").read_text(encoding="utf-8")).get("adapter_name", "default")
    weights = {k.replace(f".{adapter_name}.", "."): v for k, v in load_file(str(ckpt)).items()}
    final = load_file(str(run / ADAPTER_WEIGHTS)) if (run / ADAPTER_WEIGHTS).is_file() else None  # none in a stopped run
    if final is not None and set(weights) != set(final):
        extra = sorted(set(weights) ^ set(final))[:1]
        raise RunError(f"checkpoint {ckpt} does not match the run's adapter (for example {extra})")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "adapter_config.json", out / "adapter_config.json")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(out / ADAPTER_WEIGHTS))
    meta = json.loads((run / ADAPTER_META).read_text(encoding="utf-8"))
    meta.update(checkpoint_step=step, checkpoint_of=str(run))
    atomic_write_text(out / ADAPTER_META, json.dumps(meta, indent=1) + "\n")
    return out
