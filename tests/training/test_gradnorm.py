"""GradNorm: balances the tasks' gradient norms at the shared layer, and checkpoints exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.gradnorm import GradNorm

SCALE_A = 100.0  # task "a" is the same kind of regression as "b", 100x louder


pytestmark = pytest.mark.usefixtures("one_thread")  # the toy tensors are tiny


class TwoTaskToy:
    """A shared linear layer feeding two linear heads; both regress noisy linear targets."""

    def __init__(self, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.true_a = torch.randn(8, 1, generator=gen)
        self.true_b = torch.randn(8, 1, generator=gen)
        self.gen = gen
        self.shared = torch.nn.Linear(8, 16)
        self.head_a = torch.nn.Linear(16, 1)
        self.head_b = torch.nn.Linear(16, 1)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.shared.parameters(), *self.head_a.parameters(), *self.head_b.parameters()]

    def losses(self) -> dict[str, torch.Tensor]:
        """Unweighted losses on a fresh minibatch (noise keeps gradients away from zero)."""
        x = torch.randn(64, 8, generator=self.gen)
        y_a = x @ self.true_a + torch.randn(64, 1, generator=self.gen)
        y_b = x @ self.true_b + torch.randn(64, 1, generator=self.gen)
        h = torch.relu(self.shared(x))
        return {"a": SCALE_A * F.mse_loss(self.head_a(h), y_a), "b": F.mse_loss(self.head_b(h), y_b)}

    def weighted_grad_ratio(self, weights: dict[str, float], batches: int = 10) -> float:
        """Geometric mean over fresh batches of (w_a ||dL_a/dW||) / (w_b ||dL_b/dW||)."""
        logs = []
        for _ in range(batches):
            losses = self.losses()
            (g_a,) = torch.autograd.grad(losses["a"], self.shared.weight, retain_graph=True)
            (g_b,) = torch.autograd.grad(losses["b"], self.shared.weight)
            logs.append(math.log(weights["a"] * float(g_a.norm()) / (weights["b"] * float(g_b.norm()))))
        return math.exp(sum(logs) / len(logs))


def train_toy(
    gradnorm: GradNorm | None, steps: int = 300, model_lr: float = 1e-3
) -> tuple[TwoTaskToy, dict[str, float]]:
    toy = TwoTaskToy()
    weighting = gradnorm or GradNorm(["a", "b"])  # never updated when gradnorm is None: fixed equal weights
    opt = torch.optim.SGD(toy.parameters(), lr=model_lr)
    for _ in range(steps):
        losses = toy.losses()
        if gradnorm is not None:
            gradnorm.update(losses, toy.shared.weight)
        total = weighting.weighted_total(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
    return toy, weighting.weights


def test_gradnorm_balances_unequal_tasks_while_the_model_trains():
    toy, fixed = train_toy(None)
    assert fixed == {"a": 1.0, "b": 1.0}
    assert toy.weighted_grad_ratio(fixed) > 20.0

    # alpha = 0: pure gradient-norm balancing (task "a" reaches its noise floor much sooner
    # relative to its start, so alpha > 0 would, correctly, push it further down).
    toy, learned = train_toy(GradNorm(["a", "b"], alpha=0.0))
    assert 0.5 < toy.weighted_grad_ratio(learned) < 2.0
    assert learned["a"] < learned["b"] / 20  # the loud task was turned down
    assert sum(learned.values()) == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.5])
def test_gradnorm_balances_a_frozen_model_for_any_alpha(alpha):
    # With the model frozen every L_i / L_i(0) stays near 1, so the targets are mean(G) for all alphas.
    toy, learned = train_toy(GradNorm(["a", "b"], alpha=alpha), model_lr=0.0)
    assert 0.5 < toy.weighted_grad_ratio(learned) < 2.0


def offset_losses(w: torch.Tensor, offset_a: float, offset_b: float) -> dict[str, torch.Tensor]:
    """Two tasks with identical gradients at ``w``; only their loss levels (offsets) differ."""
    core = (w**2).sum()
    return {"a": core + offset_a, "b": core + offset_b}


def test_alpha_gives_the_slower_task_the_larger_weight():
    results = {}
    for alpha in (0.0, 1.5):
        w = torch.nn.Parameter(torch.ones(4))
        gn = GradNorm(["a", "b"], alpha=alpha)
        gn.update(offset_losses(w, 4.0, 4.0), w)  # L(0) = 8 for both
        for _ in range(200):
            # "a" has not improved at all; "b" has fallen to a fifth of its start (8 -> 1.6).
            gn.update(offset_losses(w, 4.0, -2.4), w)
        results[alpha] = gn.weights
    assert results[0.0]["a"] == pytest.approx(results[0.0]["b"], rel=0.1)
    assert results[1.5]["a"] > 2.0 * results[1.5]["b"]


def test_missing_task_keeps_its_weight_and_the_sum_is_preserved():
    w = torch.nn.Parameter(torch.ones(3))
    gn = GradNorm(["big", "small", "caption"])
    losses = {"big": 100 * (w**2).sum(), "small": (w**2).sum(), "caption": 10 * (w**2).sum()}
    gn.update(losses, w)
    caption_weight = gn.weights["caption"]
    for _ in range(20):
        losses = {"big": 100 * (w**2).sum(), "small": (w**2).sum()}
        diag = gn.update(losses, w)
    assert gn.weights["caption"] == caption_weight
    assert sum(gn.weights.values()) == pytest.approx(3.0, rel=1e-5)
    assert gn.weights["big"] < gn.weights["small"]
    assert set(diag) == {"gradnorm/big_grad", "gradnorm/big_weight", "gradnorm/small_grad", "gradnorm/small_weight"}
    # A task seen later records its own initial loss then, not a NaN.
    assert torch.isfinite(gn.initial_losses).all()


def test_weights_stay_positive_under_a_huge_imbalance():
    w = torch.nn.Parameter(torch.ones(2))
    gn = GradNorm(["a", "b"], lr=0.5, optimizer="sgd")
    for _ in range(100):
        gn.update({"a": 1e6 * (w**2).sum(), "b": (w**2).sum()}, w)
    assert all(v > 0 for v in gn.weights.values())
    assert sum(gn.weights.values()) == pytest.approx(2.0, rel=1e-5)


def test_weighted_total_uses_detached_weights():
    w = torch.nn.Parameter(torch.ones(2))
    gn = GradNorm(["a", "b"], initial_weights={"a": 3.0, "b": 1.0})
    assert gn.weights == pytest.approx({"a": 1.5, "b": 0.5})  # rescaled to sum to the task count
    total = gn.weighted_total({"a": w.sum(), "b": 2 * w.sum()})
    assert float(total.detach()) == pytest.approx(1.5 * 2 + 0.5 * 4)
    total.backward()
    assert torch.allclose(w.grad, torch.full((2,), 1.5 + 0.5 * 2))
    assert all(p.grad is None for p in gn.parameters())


def test_update_leaves_the_model_graph_usable():
    w = torch.nn.Parameter(torch.ones(2))
    gn = GradNorm(["a", "b"])
    losses = {"a": (w**2).sum(), "b": 10 * w.sum()}
    gn.update(losses, w)
    gn.weighted_total(losses).backward()  # would raise if update had freed the graph
    assert w.grad is not None


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    def losses(w):
        return {"a": 50 * (w**2).sum(), "b": (w**3).sum()}

    w = torch.nn.Parameter(torch.linspace(0.5, 1.5, 4))
    gn = GradNorm(["a", "b"])
    for _ in range(5):
        gn.update(losses(w), w)
    torch.save(gn.state_dict(), tmp_path / "gradnorm.pt")

    restored = GradNorm(["a", "b"])
    restored.load_state_dict(torch.load(tmp_path / "gradnorm.pt"))
    assert restored.weights == gn.weights
    assert torch.equal(restored.initial_losses, gn.initial_losses)
    # The Adam moments came back too: the next step is identical.
    gn.update(losses(w), w)
    restored.update(losses(w), w)
    assert restored.weights == pytest.approx(gn.weights, rel=1e-6)

    with pytest.raises(ValueError, match="tasks"):
        GradNorm(["a", "c"]).load_state_dict(torch.load(tmp_path / "gradnorm.pt"))


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown tasks"):
        GradNorm(["a"]).weighted_total({"b": torch.ones(())})
    with pytest.raises(ValueError, match="unknown tasks"):
        GradNorm(["a"], initial_weights={"b": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        GradNorm(["a", "b"], initial_weights={"a": 0.0})
    with pytest.raises(ValueError, match="duplicate"):
        GradNorm(["a", "a"])


def test_non_finite_loss_skips_the_step():
    w = torch.nn.Parameter(torch.ones(2))
    gn = GradNorm(["a", "b"])
    gn.update({"a": 10 * w.sum(), "b": w.sum()}, w)
    before = gn.weights
    gn.update({"a": w.sum() * float("nan"), "b": w.sum()}, w)
    assert gn.weights == before


def _rank_losses(w: torch.Tensor, rank: int) -> dict[str, torch.Tensor]:
    """Rank-dependent local losses; the caption-like task "c" exists on rank 0 only."""
    losses = {"a": (10.0 + 20.0 * rank) * (w**2).sum(), "b": (1.0 + rank) * (w**3).sum()}
    if rank == 0:
        losses["c"] = 3.0 * w.sum()
    return losses


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        w = torch.nn.Parameter(torch.linspace(0.5, 1.5, 4))
        gn = GradNorm(["a", "b", "c"])
        for _ in range(10):
            gn.update(_rank_losses(w, rank), w)
        torch.save(gn.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_ranks_take_the_same_step_on_their_averaged_gradients(tmp_path):
    # fork: the children need not import torch again (spawn would cost seconds on a busy machine).
    args = (str(tmp_path / "init"), str(tmp_path))
    torch.multiprocessing.start_processes(_ddp_worker, args=args, nprocs=2, start_method="fork")
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    ranks = []
    for state in states:
        gn = GradNorm(["a", "b", "c"])
        gn.load_state_dict(state)
        ranks.append(gn)
    assert ranks[0].weights == ranks[1].weights
    # The same as one process seeing the averaged losses ("c" averaged over the one rank that has it).
    w = torch.nn.Parameter(torch.linspace(0.5, 1.5, 4))
    single = GradNorm(["a", "b", "c"])
    for _ in range(10):
        per_rank = [_rank_losses(w, r) for r in range(2)]
        single.update(
            {
                "a": (per_rank[0]["a"] + per_rank[1]["a"]) / 2,
                "b": (per_rank[0]["b"] + per_rank[1]["b"]) / 2,
                "c": per_rank[0]["c"],
            },
            w,
        )
    assert ranks[0].weights == pytest.approx(single.weights, rel=1e-5)
    assert torch.allclose(ranks[0].initial_losses, single.initial_losses)
