"""Data parallelism across processes launched by ``torchrun``: the process group, who is
rank 0, and how a global batch is shared out.

``torchrun --nproc-per-node N -m scansearch search ...`` starts N processes with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. :func:`init` joins them
into one process group (gloo on the CPU; nccl on CUDA, each process on ``cuda:LOCAL_RANK``).
Without those variables (a plain ``python -m scansearch``) nothing here does anything:
every helper answers as for a single process and hands its input back untouched.

The rules every distributed run follows:

* every rank reads the same seeded loaders, so it draws the same *global* batch; it keeps
  its own contiguous slice (:func:`shard`), and the gradients are averaged across ranks.
  A slice's loss is weighted by its share of the batch (:func:`shard` returns the weight),
  so N processes take exactly the step one process would take on the whole batch, a last
  batch that does not split evenly included;
* only rank 0 writes files and draws progress; the others compute the same results;
* a decision that must agree (a selection, a pruned trial) is taken on rank 0 and
  broadcast (:func:`broadcast_object`, :func:`on_main`).
"""
from __future__ import annotations

import datetime
import gc
import inspect
import os
import pickle
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scansearch.errors import TrainError

T = TypeVar("T")
# how long a rank waits at a collective for the others (a failing rank brings the group
# down well before: torchrun stops every process once one of them exits with an error)
TIMEOUT = datetime.timedelta(minutes=30)


class DistributedError(TrainError):
    """A setting or data set that cannot run across processes as asked (a user error, exit 2)."""


# -- the environment torchrun sets ---------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"the environment variable {name}={value!r} is not an integer") from None


def requested() -> bool:
    """True when launched by torchrun (or alike) with more than one process."""
    return _env_int("WORLD_SIZE", 1) > 1


def env_world_size() -> int:
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    return _env_int("RANK", 0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0)


# -- the process group --------------------------------------------------------------------------
def is_distributed() -> bool:
    """True once :func:`init` has joined more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0, the process that writes files and prints (the only one without torchrun)."""
    return rank() == 0


def device_spec(spec: str) -> str:
    """The device this process trains on, for the ``--device`` given: under torchrun
    ``cuda:LOCAL_RANK`` for ``auto`` (with CUDA) and ``cuda``, ``cpu`` for ``cpu`` (or ``auto``
    without CUDA); a numbered GPU is refused (each process takes its own). Unchanged
    without torchrun."""
    if not requested():
        return spec
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError("--device cuda asked for, but CUDA is not available")
        if local_rank() >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank()} has no GPU: this machine has "
                                   f"{torch.cuda.device_count()}; start at most that many processes per node")
        return f"cuda:{local_rank()}"
    raise DistributedError(f"--device {spec}: under torchrun each process takes cuda:LOCAL_RANK (or the CPU); "
                           f"give --device auto, cuda or cpu")


def init(device: str) -> torch.device:
    """Join the process group torchrun described (``device`` from :func:`device_spec`):
    gloo for the CPU, nccl for CUDA. Returns the process's device. Does nothing (but
    return the device) without torchrun or when the group exists already."""
    target = torch.device(device)
    if not requested() or is_distributed():
        return target
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run without torchrun")
    if target.type == "cuda":
        torch.cuda.set_device(target)
        backend = "nccl"
    elif target.type == "cpu":
        backend = "gloo"
    else:
        raise DistributedError(f"device {device}: distributed training runs on the CPU (gloo) or CUDA (nccl)")
    dist.init_process_group(backend=backend, init_method="env://", timeout=TIMEOUT,
                            **({"device_id": target} if target.type == "cuda" else {}))
    return target


def cleanup(wait: bool = True) -> None:
    """Leave the process group (if any). ``wait``: after the other ranks get here too (the
    end of a run that went well: no rank leaves while another still talks to it); a rank
    that failed leaves at once."""
    if dist.is_available() and dist.is_initialized():
        if wait and is_distributed():
            gc.collect()  # a DDP wrapper or work handle still holding the group goes first
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


# -- moving Python objects ------------------------------------------------------------------------
def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled); ``obj`` itself without torchrun."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def portable(error: BaseException) -> BaseException:
    """``error`` if it can be pickled (sent to the other ranks), else a RuntimeError with its text."""

    try:
        pickle.dumps(error)
        return error
    except Exception:  # noqa: BLE001 - an exception that cannot travel travels as its text
        return RuntimeError(f"{type(error).__name__}: {error}")


class _Failed:
    """What :func:`on_main` broadcasts when rank 0's part raised."""

    def __init__(self, error: BaseException):
        self.error = portable(error)


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 alone (creating the run folder, ...) and hand its result to every
    rank. When it raises, every rank raises the same error, so that a mistake found there ends
    all processes the same way (one line, the same exit code) instead of leaving the others
    waiting at their next collective."""
    if not is_distributed():
        return fn()
    if is_main():
        try:
            result = fn()
        except BaseException as err:
            broadcast_object(_Failed(err))
            raise
        return broadcast_object(result)
    result = broadcast_object(None)
    if isinstance(result, _Failed):
        raise result.error
    return result


# -- gradients and sums ---------------------------------------------------------------------------
def all_reduce_mean(tensors: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """The mean over ranks of each tensor (None stays None), in one collective. The same
    list back without torchrun. A NaN or infinity on any rank reaches every rank."""
    tensors = list(tensors)
    if not is_distributed():
        return tensors
    present = [t for t in tensors if t is not None]
    if not present:
        return tensors
    flat = torch.cat([t.detach().reshape(-1).to(present[0].dtype) for t in present])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    out, offset = [], 0
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(flat[offset:offset + t.numel()].view_as(t).to(t.dtype))
        offset += t.numel()
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (a copy); ``tensor`` itself without torchrun."""
    if not is_distributed():
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


# -- the global batch -----------------------------------------------------------------------------
def shard_bounds(n: int, index: int, world: int) -> tuple[int, int]:
    """Rank ``index``'s contiguous slice ``[start, stop)`` of ``n`` samples: the first
    ``n % world`` ranks take one sample more."""
    base, extra = divmod(n, world)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def shard(batch: Sequence[torch.Tensor], index: int | None = None, world: int | None = None
          ) -> tuple[tuple[torch.Tensor, ...], float]:
    """This rank's slice of a global batch and its loss weight ``len(slice) * world / len(batch)``:
    a slice's mean loss times the weight, averaged over ranks, is the whole batch's mean loss.
    Without torchrun: the batch untouched and weight 1.0."""
    world = world_size() if world is None else world
    if world == 1:
        return tuple(batch), 1.0
    index = rank() if index is None else index
    n = len(batch[-1])
    if n < world:
        raise DistributedError(f"a batch of {n} sample(s) cannot be shared by {world} processes; choose a "
                               f"--batch-size for which no batch (the last one included) holds fewer")
    start, stop = shard_bounds(n, index, world)
    weight = 1.0 if n % world == 0 else (stop - start) * world / n
    return tuple(t[start:stop] for t in batch), weight


def check_global_batch(batch_size: int, world: int | None = None) -> None:
    """DistributedError unless the global batch divides by the number of processes."""
    world = env_world_size() if world is None else world
    if world > 1 and batch_size % world:
        raise DistributedError(f"--batch-size {batch_size} is the global batch: it must divide by the {world} "
                               f"processes (torchrun --nproc-per-node), e.g. {max(world, batch_size // world * world)}")


def check_shardable(loader: Any, split: str, world: int | None = None) -> None:
    """DistributedError when a batch of ``loader`` (its last, shorter one) holds fewer samples
    than there are processes. Loaders that do not tell their size are checked batch by batch."""
    world = world_size() if world is None else world
    n, size = getattr(loader, "num_samples", None), getattr(loader, "batch_size", None)
    if world == 1 or not isinstance(n, int) or not isinstance(size, int) or size < 1:
        return
    last = n % size
    if 0 < last < world:
        raise DistributedError(f"the last {split} batch holds {last} sample(s) ({n} images, --batch-size {size}), "
                               f"fewer than the {world} processes; choose another --batch-size")


# -- the model ------------------------------------------------------------------------------------
def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (every parameter, the architecture's included).
    A model whose forward may leave parameters out (a supernet sampling its candidates)
    says so with ``ddp_find_unused_parameters``. Buffers are not broadcast: every rank
    computes the same ones."""


    find_unused = bool(getattr(model, "ddp_find_unused_parameters", False))
    buffers = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused, **buffers)


def release() -> None:
    """Collect a DDP wrapper its owner has let go of, so that its gradient hooks leave the
    model at once (a later backward on the bare model, e.g. fine-tuning on every rank, must
    not wait for the other ranks)."""
    if is_distributed():
        gc.collect()


__all__ = ["DistributedError", "all_reduce_mean", "all_reduce_sum", "barrier", "broadcast_object",
           "check_global_batch", "check_shardable", "cleanup", "device_spec", "env_rank", "env_world_size", "init",
           "is_distributed", "is_main", "local_rank", "on_main", "portable", "rank", "release", "requested", "shard",
           "shard_bounds", "world_size", "wrap_model"]
