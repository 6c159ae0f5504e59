"""DistributedDataParallel on CPU: two gloo processes train the same tiny run and end with the same
weights; ``gather_with_grad`` concatenates rows in rank order and keeps only the local graph."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
TIMEOUT_S = 300  # a collective that one rank never joins hangs forever: fail instead


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(worker, *args) -> None:
    """Run ``worker(rank, *args)`` in WORLD spawned processes; fail on an error or a hang."""
    context = mp.start_processes(worker, args=args, nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail(f"the {WORLD} ranks did not finish within {TIMEOUT_S} s (a deadlock?)")


def _join_group(rank: int, port: int) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))


# ---------------------------------------------------------------------------------------- training

#: Tasks whose losses use only what the DDP-wrapped forward returns, then every task (the default).
RUNS = {"detection_mask": ["--tasks", '["detection", "mask"]'], "all_tasks": []}


def _train_worker(rank: int, port: int, runs: dict[str, list[str]], out: str) -> None:
    """One rank of ``torchrun -m training.train``, for each run: Trainer(config).fit(), then save this
    rank's weights (or the error). The group's short timeout turns a hang into an error."""
    from datetime import timedelta

    from safetensors.torch import save_file

    from training.config import load_config
    from training.engine import Trainer

    _join_group(rank, port)
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=60))  # Trainer finds it joined
    for name, argv in runs.items():
        folder = Path(out) / name
        folder.mkdir(exist_ok=True)
        try:
            trainer = Trainer(load_config(None, argv))
            summary = trainer.fit()
        except Exception as exc:  # noqa: BLE001 -- recorded for the test to report; the next run still starts
            (folder / f"rank{rank}.error").write_text(f"{type(exc).__name__}: {exc}")
            continue
        state = trained_state(trainer.model)
        save_file(state, str(folder / f"rank{rank}.safetensors"))
        (folder / f"rank{rank}.json").write_text(json.dumps({"steps": summary["steps"], "images_seen": summary["images_seen"]}))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training can change: the parameters that take gradients, and the buffers. The frozen
    text encoder (~91 MB of the tiny preset's ~96 MB) is left out to keep the test's disk use small."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in frozen}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Iterator[Path]:
    """Both RUNS, two steps each, in one pair of gloo processes (the imports are paid once). Their
    checkpoints (~0.4 GB) are removed when the module's tests are done."""
    from tests.training.small_model import tiny_run_arguments

    root = tmp_path_factory.mktemp("ddp")
    base = tiny_run_arguments(root, steps=2)
    runs = {name: [*base, "--output_dir", str(root / name / "run"), *extra] for name, extra in RUNS.items()}
    run_ranks(_train_worker, free_port(), runs, str(root))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def check_ranks_agree(folder: Path) -> None:
    from safetensors.torch import load_file

    errors = {r: (folder / f"rank{r}.error").read_text() for r in range(WORLD) if (folder / f"rank{r}.error").exists()}
    assert not errors, f"ranks failed: {errors}"
    summaries = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert all(s["steps"] == 2 for s in summaries)
    assert all(s["images_seen"] == 2 * 2 * WORLD for s in summaries)  # steps x batch x ranks
    weights = [load_file(str(folder / f"rank{r}.safetensors")) for r in range(WORLD)]
    assert weights[0].keys() == weights[1].keys()
    differing = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert not differing, f"ranks disagree on {len(differing)} tensors, e.g. {differing[:3]}"
    # Rank 0 alone wrote the checkpoint and the metrics; what it saved is what both ranks hold.
    saved = load_file(str(folder / "run" / "final" / "model.safetensors"))
    assert len(weights[0]) > 0 and weights[0].keys() <= saved.keys()
    assert all(torch.equal(saved[k], weights[0][k]) for k in weights[0])
    assert json.loads((folder / "run" / "metrics.json").read_text())["steps"] == 2


def test_two_gloo_ranks_train_to_identical_weights(ddp_runs):
    check_ranks_agree(ddp_runs / "detection_mask")


def test_two_gloo_ranks_train_every_task_to_identical_weights(ddp_runs):
    check_ranks_agree(ddp_runs / "all_tasks")


# ---------------------------------------------------------------------------------------- gather


def _gather_worker(rank: int, port: int, out: str) -> None:
    from training import distributed

    _join_group(rank, port)
    torch.distributed.init_process_group("gloo")
    rows = rank + 1  # ranks hold different numbers of rows
    local = (torch.arange(rows * 3, dtype=torch.float32).view(rows, 3) + 100 * rank).requires_grad_()
    gathered = distributed.gather_with_grad(local)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).view_as(gathered) + 1
    (gathered * weights).sum().backward()
    strings = distributed.gather_objects([f"rank{rank}-row{i}" for i in range(rows)])
    torch.save({"gathered": gathered.detach(), "grad": local.grad, "requires_grad": gathered.requires_grad,
                "strings": strings, "weights": weights}, Path(out) / f"gather{rank}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_gather_with_grad_concatenates_in_rank_order_and_backpropagates_locally(tmp_path):
    run_ranks(_gather_worker, free_port(), str(tmp_path))
    results = [torch.load(tmp_path / f"gather{r}.pt") for r in range(WORLD)]
    local = [torch.arange((r + 1) * 3, dtype=torch.float32).view(r + 1, 3) + 100 * r for r in range(WORLD)]
    expected = torch.cat(local)
    offsets = [0, 1, 3]  # rank r's rows in the gathered tensor
    for r, result in enumerate(results):
        assert torch.equal(result["gathered"], expected)
        assert result["requires_grad"]
        # d(sum(gathered * weights)) / d(local) = this rank's rows of the weights, nothing else.
        assert torch.equal(result["grad"], result["weights"][offsets[r] : offsets[r + 1]])
        assert result["strings"] == ["rank0-row0", "rank1-row0", "rank1-row1"]
