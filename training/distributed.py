"""Thin helpers over torch.distributed that are no-ops in a single process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_environment(device: str) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # NCCL collectives use the current device
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def _scalar(value: float) -> torch.Tensor:
    """A one-element tensor where the backend can reduce it (NCCL reduces CUDA tensors only)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return torch.tensor([value], dtype=torch.float64, device=device)


def mean_over_ranks(value: float) -> float:
    if not is_distributed():
        return value
    tensor = _scalar(value)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


def max_over_ranks(value: float) -> float:
    """The largest of the ranks' values (every rank gets the same number: decisions stay in step)."""
    if not is_distributed():
        return value
    tensor = _scalar(value)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate (n_r, ...) tensors from all ranks; gradients flow only into this rank's part.

    Rows may differ in number across ranks (padded for the collective, trimmed after)."""
    if not is_distributed():
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([len(tensor)]))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: len(tensor)] = tensor.detach()
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    parts = [p[: int(s.item())] for p, s in zip(parts, sizes)]
    parts[rank()] = tensor  # the local rows keep their graph
    return torch.cat(parts)


def gather_objects(items: list) -> list:
    """All ranks' lists of picklable items (strings, tuples) concatenated in rank order (the same
    order as gather_with_grad)."""
    if not is_distributed():
        return items
    gathered: list[list] = [[] for _ in range(world_size())]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]
