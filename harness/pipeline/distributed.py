"""Data-parallel runs under ``torchrun`` / ``accelerate launch``: the process group and the collectives a sweep uses.

``torchrun --nproc-per-node N -m harness sweep ...`` (or ``accelerate launch -m harness sweep ...``, which sets
the same variables) starts N copies of the command with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; on
several hosts torchrun's c10d rendezvous joins them (README, "Several GPUs and hosts"). No home-made networking:
everything goes through :mod:`torch.distributed`.

What each rank does (the unit of work is the **examples of each (alpha, suite, split)**: every split's rows are
dealt round-robin, so ranks get equal shares of every split and finish each alpha together; a classifier's rows
are dealt as whole batches of the one-process batch plan, so its logits are bit for bit those of one process):

* loads base and adapted and blends its own copy in memory (:class:`harness.models.blend.BlendEngine`);
* scores its share of every split (:meth:`harness.tasks.base.Task.subset`) and all-gathers the per-example
  records (``all_gather_object``), so every rank holds the whole split's records and computes identical metrics;
* the results store is read and written by rank 0 alone: rank 0 looks a unit up and broadcasts what it found
  (the other ranks never open the store), and writes each unit once its records are gathered, so a rerun after
  a killed rank recomputes only the units that never finished;
* the adaptive alpha search decides on rank 0 and broadcasts the decision (:meth:`DistGroup.decide`);
* rank 0 alone writes the run directory and the report, draws progress bars and logs at info level; the other
  ranks log warnings and errors only, prefixed with their rank.

The default process group uses NCCL when the ranks score on CUDA, else gloo; the collectives here carry Python
objects (records of a few MB) and run on a gloo group either way, which needs no device.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np

from harness.errors import HarnessError, SpecError, format_error
from harness.settings import env

__all__ = ["DistGroup", "dist_env", "init_group", "join_group", "group_info", "rank_memory", "rank_logging"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def dist_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun and
    accelerate launch), or ``None`` when ``WORLD_SIZE`` is unset or 1 (a single process).

    Raises
    ------
    SpecError
        If the variables are not integers with ``0 <= RANK < WORLD_SIZE``.
    """
    raw = {k: env(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if raw["WORLD_SIZE"] in (None, "1"):
        return None
    try:
        rank, world = int(raw["RANK"] or ""), int(raw["WORLD_SIZE"] or "")
        local = int(raw["LOCAL_RANK"]) if raw["LOCAL_RANK"] is not None else rank
    except ValueError as e:
        raise SpecError(format_error("the distributed environment is not usable", where="RANK/WORLD_SIZE/LOCAL_RANK",
                                     expected="integers set by torchrun or accelerate launch", got=raw,
                                     fix="start the run with torchrun --nproc-per-node N -m harness ...")) from e
    if not 0 <= rank < world:
        raise SpecError(format_error("RANK is outside [0, WORLD_SIZE)", where="RANK/WORLD_SIZE", got=raw,
                                     fix="start the run with torchrun --nproc-per-node N -m harness ..."))
    return rank, world, local


@dataclass
class DistGroup:
    """The ranks of one run and the collectives the sweep uses (module docstring).

    Attributes
    ----------
    rank, world_size, local_rank : int
        This process, the number of processes, this process on its host.
    backend : str
        The default group's backend (``nccl`` or ``gloo``).
    objects : Any
        The gloo process group that carries Python objects (``None``: the default group, already gloo).
    owned : bool
        Whether :func:`init_group` created the default group (then :meth:`close` destroys it; a group created by
        the caller, e.g. an ``accelerate.Accelerator``, is left as it is).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    objects: Any = None
    owned: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that reads and writes the store and writes the run directory)."""
        return self.rank == 0

    def shard(self, n: int) -> np.ndarray:
        """This rank's rows of a split of ``n`` rows: ``rank, rank + world_size, ...`` (int64, increasing)."""
        return np.arange(self.rank, n, self.world_size, dtype=np.int64)

    def deal(self, batches: list[np.ndarray]) -> np.ndarray:
        """This rank's rows when whole batches are dealt round-robin (batch ``rank``, ``rank + world_size``...),
        increasing; with the batches of a length-sorted greedy plan (:func:`harness.predict.make_batches`), the
        rank's own plan over these rows rebuilds exactly its batches."""
        mine = batches[self.rank::self.world_size]
        return np.sort(np.concatenate(mine)).astype(np.int64) if mine else np.zeros(0, np.int64)

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (pickled; :func:`torch.distributed.all_gather_object`)."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.objects)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (the others' argument is ignored)."""
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def decide(self, fn: Callable[[], T]) -> T:
        """``fn()`` computed on rank 0 and broadcast: the same decision on every rank, whatever float rounding
        the other hosts' libraries would give. An exception on rank 0 is raised on every rank."""
        if not self.is_main:
            ok, value, code = self.broadcast(None)
        else:
            try:
                value, ok, code = fn(), True, 0
            except Exception as e:
                self.broadcast((False, f"{type(e).__name__}: {e}", getattr(e, "exit_code", 3)))
                raise
            self.broadcast((True, value, 0))
        if not ok:
            err = HarnessError(f"rank 0 failed: {value}")
            err.exit_code = code  # the process exits as rank 0 does (2: unusable input, 3: a bug)
            raise err
        return value

    def close(self) -> None:
        """Leave the process group (only if :func:`init_group` created it)."""
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def init_group(device_type: str) -> DistGroup | None:
    """Join the run's process group when started by torchrun / accelerate launch (``None`` for one process).

    Parameters
    ----------
    device_type : str
        ``cuda`` (the default group uses NCCL and this rank scores on ``cuda:LOCAL_RANK``) or anything else (gloo).

    Raises
    ------
    SpecError
        A malformed environment, or more ranks on a host than it has CUDA devices.
    """
    ids = dist_env()
    if ids is None:
        return None
    import torch
    import torch.distributed as dist

    rank, world, local = ids
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        if local >= torch.cuda.device_count():
            raise SpecError(format_error("more ranks on this host than CUDA devices", where="LOCAL_RANK",
                                         got=f"LOCAL_RANK={local} with {torch.cuda.device_count()} devices",
                                         fix="use --nproc-per-node <= the number of GPUs, or --device cpu"))
        torch.cuda.set_device(local)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend, **({"device_id": torch.device("cuda", local)}
                                                    if backend == "nccl" else {}))
    objects = dist.new_group(backend="gloo") if backend != "gloo" else None
    log.info("rank %d of %d (local rank %d), backend %s", rank, world, local, backend)
    return DistGroup(rank=rank, world_size=world, local_rank=local, backend=backend, objects=objects, owned=owned)


def join_group(options):
    """``(group, options)``: the run's :class:`DistGroup` (``None`` for one process) and the settings this rank
    runs with: on CUDA its own device ``cuda:LOCAL_RANK`` (unless ``--device`` names one, or ``--device-map``
    places the model: then the group is gloo and the model spreads over the host's GPUs, one process per host);
    progress bars on rank 0 only.

    Raises
    ------
    SpecError
        See :func:`init_group`.
    """
    if dist_env() is None:
        return None, options
    import torch

    if options.device_map is not None:
        device_type = "cpu"  # gloo; accelerate places the model on this host's GPUs
    elif options.device not in (None, "", "auto"):
        device_type = torch.device(options.device).type
    else:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    group = init_group(device_type)
    if not group.is_main:  # transformers' own bars (loading weights) too: rank 0 alone draws
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    updates: dict[str, Any] = {"progress": options.progress and group.is_main}
    if device_type == "cuda" and options.device_map is None and options.device in (None, "", "auto", "cuda"):
        updates["device"] = f"cuda:{group.local_rank}"
    return group, dataclasses.replace(options, **updates)


def group_info(group: DistGroup | None) -> dict[str, Any] | None:
    """The manifest's ``distributed`` entry (``None`` for one process)."""
    if group is None:
        return None
    return {"world_size": group.world_size, "backend": group.backend,
            "unit": "the examples of each (alpha, suite, split), dealt round-robin to the ranks",
            "store": "rank 0 reads and writes the results store; the other ranks never open it"}


def rank_memory(model, group: DistGroup | None) -> dict[str, Any]:
    """Memory per device of every rank (:func:`harness.models.placement.memory_by_device`), keyed ``rank N``;
    logged by rank 0. Every rank of a group must call it."""
    from harness.models.placement import memory_by_device

    mine = memory_by_device(model)
    ranks = [mine] if group is None else group.all_gather(mine)
    out = {f"rank {r}": m for r, m in enumerate(ranks)}
    for r, m in out.items():
        for dev, e in m.items():
            if "peak_gib" in e:
                log.info("%s %s: peak %.2f GiB allocated (weights %.2f GiB)", r, dev, e["peak_gib"], e["weights_gib"])
    return out


def rank_logging(rank: int, debug: bool = False) -> None:
    """Log format and level of a rank: every line is prefixed with ``[rank N]``; rank 0 keeps the run's level, the
    others print errors only (rank 0 prints the run's warnings once), or everything down to debug with
    ``--debug``."""
    root = logging.getLogger()
    fmt = logging.Formatter(f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    for h in root.handlers:
        h.setFormatter(fmt)
    if rank != 0:
        root.setLevel(logging.DEBUG if debug else logging.ERROR)
