"""torchrun / DDP setup in a few lines (nanoGPT style): nothing hard-codes addresses, ports or
devices; torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...)
decides everything. Without it the process is a world of one and every helper is a no-op.

    torchrun --standalone --nproc_per_node=2 main_pretrain.py ...        # one machine
    torchrun --nnodes=N --node_rank=i --master_addr=HOST --nproc_per_node=G main_pretrain.py ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from util.cli import UsageError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = CUDA when available, else CPU; a bare ``cuda`` becomes this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name} is not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    if int(os.environ.get("RANK", -1)) == -1:
        return DistInfo(0, 1, 0, resolve_device(device_name), False)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, device, True)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (identity in a single process); returns ``t``."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """``[world x N, ...]``: every rank's ``t`` concatenated in rank order, differentiable
    (``torch.distributed.nn.functional.all_gather``: its backward sends each rank the sum of the
    gradients all ranks computed for its rows; on gloo through scatters). Every rank computes the
    same global loss, so the gradient of its rows is ``world x`` theirs and DDP's average over
    ranks gives exactly the gradient of the global loss (one process on the whole batch), for
    the features and for parameters used outside them (the temperature). All ranks must pass
    the same shape (the sampler gives every rank micro-batches of one size). Identity in one
    process."""
    if world_size() == 1:
        return t
    import torch.distributed.nn.functional as dist_nn
    return torch.cat(dist_nn.all_gather(t.contiguous()))


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (first dims may differ) concatenated in rank order, no gradient."""
    world = world_size()
    if world == 1:
        return t
    size = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[:t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:int(s.item())] for p, s in zip(parts, sizes)])
