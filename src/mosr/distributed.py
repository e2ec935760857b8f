"""Data-parallel evaluation and analysis: which process does what, and how results meet on the main one.

``torchrun`` (``python -m torch.distributed.run``) or ``accelerate launch`` starts one copy of the
command per process; :func:`process_group` reads where this copy stands through
``accelerate.PartialState``. Work is split by whole batches, planned exactly as one process plans
them, so every prompt is computed with the same batch-mates and the same padding as in a
one-process run. With one process (no ``WORLD_SIZE`` above 1 in the environment) nothing here
touches torch.distributed, and every helper is a plain pass-through.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from mosr.errors import MosrError, RunError

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the ``world`` processes of one command (rank 0 is the main one)."""

    world: int = 1
    rank: int = 0
    device: torch.device | None = None  # None: the library default (one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def dealer(self) -> Callable[[int], bool] | None:
        """Deal whole batches round-robin: called once per planned batch, in the same order on every
        process, it says whether this process takes it. The count runs on across calls (tasks), so
        many one-batch tasks still spread over the processes. None with one process."""
        if self.world == 1:
            return None
        dealt = itertools.count()
        return lambda _batch: next(dealt) % self.world == self.rank

    def broadcast(self, obj: T) -> T:
        """The main process's ``obj`` on every process (any picklable object)."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order (on every process)."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return list(gather_object([obj]))

    def on_main(self, fn: Callable[[], T], *, share: bool = True) -> T | None:
        """Run ``fn`` on the main process only; every process gets its result (``share``; else None)
        or its refusal: a :class:`MosrError` on the main process is raised on every process, so none
        is left waiting. (Any other exception ends the main process; the launcher then stops the rest.)"""
        if self.world == 1:
            return fn()
        result: Any = None
        error: MosrError | None = None
        if self.is_main:
            try:
                result = fn()
            except MosrError as exc:
                error = exc
        failure = None if error is None else (type(error), str(error))
        shared, failure = self.broadcast((result if share else None, failure))
        if error is not None:
            raise error
        if failure is not None:
            raise failure[0](failure[1])
        return result if self.is_main else shared


@functools.cache
def _group(world: int) -> ProcessGroup:
    if world <= 1:
        return ProcessGroup()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available(), timeout=wait_limit())
    return ProcessGroup(state.num_processes, state.process_index, state.device)


def wait_limit() -> datetime.timedelta:
    """How long a process waits for the others at a collective (``MOSR_DIST_TIMEOUT_MIN``, default 180
    minutes). The other processes wait while the main one judges every completion, which a hub judge
    on thousands of them can make longer than torch's default of 10 (NCCL) or 30 (gloo) minutes."""
    raw = os.environ.get("MOSR_DIST_TIMEOUT_MIN", "180")
    try:
        minutes = float(raw)
    except ValueError as exc:
        raise RunError(f"MOSR_DIST_TIMEOUT_MIN={raw!r} is not a number of minutes") from exc
    if minutes <= 0:
        raise RunError(f"MOSR_DIST_TIMEOUT_MIN must be above 0, got {raw}")
    return datetime.timedelta(minutes=minutes)


def process_group() -> ProcessGroup:
    """Where this process stands; one process unless a launcher set ``WORLD_SIZE`` above 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise RunError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of processes") from exc
    return _group(world)


def shutdown(*, wait: bool = True) -> None:
    """End this process's part in the process group, if one was started.

    Left to interpreter exit, gloo's worker threads are torn down after the group they serve, and
    a process that reaches exit before the others can abort ("terminate called without an active
    exception"). ``wait`` first lets every process reach this point (a barrier), so no process
    closes connections another still uses; pass ``wait=False`` on an error path, where another
    process may never arrive.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    if wait:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
