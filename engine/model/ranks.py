"""The ranks of a training or encode spread over processes: who this process is, its device, its process group.

zspace starts no processes of its own: ``engine.model.launch`` wraps torchrun's
standalone launcher, and an external ``torchrun`` (several machines) sets the
same environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``). Without it a process is rank 0 of 1 and
nothing here talks to anyone. Backend ``nccl`` on CUDA (one GPU per rank, the
one ``LOCAL_RANK`` names), ``gloo`` on CPU.

Batch norm over ranks: on CUDA torch's ``SyncBatchNorm``; on CPU, where
torch's refuses to run, ``CpuSyncBatchNorm`` does the same arithmetic over
gloo (one all-reduce per layer forward, one backward), so N ranks of batch B/N
train as one process of batch B.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from engine.model.config import RANK_TIMEOUT_S
from engine.model.precision import resolve_device


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def ranks_from_env() -> Ranks:
    """The ranks torchrun describes in the environment; rank 0 of 1 outside it."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", 1))
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    return Ranks(int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)), local_world)


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", 1)) > 1


def rank_device(device: str, ranks: Ranks) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for ``auto``/``cuda`` when ranks share a machine's GPUs."""
    dev = resolve_device(device)
    if dev.type != "cuda" or not ranks.distributed:
        return dev
    if device not in ("auto", "cuda"):
        raise ValueError(f"--device {device} with {ranks.world} ranks: pass --device cuda (each rank takes the GPU "
                         f"its LOCAL_RANK names)")
    if ranks.local_rank >= torch.cuda.device_count():
        raise ValueError(f"rank {ranks.rank} has LOCAL_RANK {ranks.local_rank} but this machine has "
                         f"{torch.cuda.device_count()} GPUs: start at most that many ranks per machine")
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


@contextlib.contextmanager
def process_group(device: str, timeout_s: float = RANK_TIMEOUT_S) -> Iterator[tuple[Ranks, torch.device]]:
    """(ranks, this rank's device), inside the job's process group when torchrun started several ranks."""
    ranks = ranks_from_env()
    dev = rank_device(device, ranks)
    created = ranks.distributed and not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    try:
        yield ranks, dev
    finally:
        if created:
            dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def all_sum(ranks: Ranks, values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of ``values`` (a new tensor; ``values`` itself outside a process group)."""
    if not ranks.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out


def all_gather(ranks: Ranks, obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not ranks.distributed:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


class RankError(RuntimeError):
    """An error raised on another rank, re-raised here so every rank stops with the same message."""


def on_main(ranks: Ranks, fn: Callable[[], object]):
    """``fn()`` on rank 0, its result handed to every rank; an error on rank 0 is raised on every rank
    (a ``ValueError`` or ``FileNotFoundError`` as the same type), so no rank waits for one that gave up."""
    if not ranks.distributed:
        return fn()
    box: list = [None]
    if ranks.main:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "ok":
        return value
    if ranks.main:
        raise value
    if isinstance(value, (ValueError, FileNotFoundError)):
        raise type(value)(*value.args) if _picklable(value) else ValueError(str(value))
    raise RankError(f"rank 0 failed: {type(value).__name__}: {value}")


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
        return True
    except Exception:
        return False


class _SyncBatchNorm(torch.autograd.Function):
    """Batch norm over the batch of all ranks, forward and backward, with one all-reduce each way per layer
    (the arithmetic of torch's CUDA ``SyncBatchNorm``).

    Forward: each rank's mean and spread around it (two passes), combined in float64 by Chan et al.'s
    pairwise formula (sums of n*mean and of M2 + n*mean^2), then the fused ``batch_norm`` kernel with those
    statistics. Backward: the per-channel sums of dy and dy*(x - mean) are summed over ranks; the gradients
    of weight and bias stay per rank (DDP averages them).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, group):
        xf = x.float()
        c, n_local = xf.shape[1], xf.numel() // xf.shape[1]
        mean_local = xf.mean((0, 2, 3))
        m2_local = (xf - mean_local.view(1, -1, 1, 1)).square_().sum((0, 2, 3))
        m64 = mean_local.double()
        total = torch.cat([n_local * m64, m2_local.double() + n_local * m64.square(),
                           torch.tensor([float(n_local)], dtype=torch.float64)])
        dist.all_reduce(total, group=group)
        n = total[-1]
        mean64 = total[:c] / n
        var64 = (total[c : 2 * c] / n - mean64.square()).clamp_min(0.0)
        mean, var = mean64.float(), var64.float()
        y = F.batch_norm(xf, mean, var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(xf, weight, mean, torch.rsqrt(var + eps))
        ctx.group, ctx.n, ctx.in_dtype = group, float(n), x.dtype
        ctx.mark_non_differentiable(mean64, var64)
        return y.to(x.dtype), mean64, var64

    @staticmethod
    def backward(ctx, dy, _mean_grad, _var_grad):
        xf, weight, mean, invstd = ctx.saved_tensors
        dy = dy.float()
        xmu = xf - mean.view(1, -1, 1, 1)
        sum_dy, sum_dy_xmu = dy.sum((0, 2, 3)), (dy * xmu).sum((0, 2, 3))
        grad_weight = sum_dy_xmu * invstd if weight is not None else None
        grad_bias = sum_dy.clone() if weight is not None else None
        both = torch.cat([sum_dy, sum_dy_xmu])
        dist.all_reduce(both, group=ctx.group)
        c = len(mean)
        mean_dy, mean_dy_xmu = both[:c] / ctx.n, both[c:] / ctx.n
        scale = invstd * (weight if weight is not None else 1.0)
        xmu.mul_((invstd.square() * mean_dy_xmu).view(1, -1, 1, 1))
        dx = dy.sub_(mean_dy.view(1, -1, 1, 1)).sub_(xmu).mul_(scale.view(1, -1, 1, 1))
        return dx.to(ctx.in_dtype), grad_weight, grad_bias, None, None


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the batch of all ranks (gloo, CPU tensors).

    Same parameters, buffers and state-dict keys as ``BatchNorm2d``: checkpoints
    move freely between 1 and N ranks. Outside a process group or in eval mode it
    is plain batch norm.
    """

    group = None  # the process group of its all-reduces (None: all ranks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        y, mean, var = _SyncBatchNorm.apply(x, self.weight, self.bias, self.eps, self.group)
        if self.track_running_stats:
            n = x.numel() // x.shape[1] * dist.get_world_size(self.group)
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.float(), alpha=m)
                self.running_var.mul_(1 - m).add_((var * (n / (n - 1))).float(), alpha=m)
        return y.contiguous(memory_format=_memory_format(x))


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every ``BatchNorm2d`` computing statistics over all ranks (call inside the process group)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model, None)


def _convert_cpu(module: nn.Module, group) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.group = group
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child, group))
    return module


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` (the one whose state dict is saved)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
