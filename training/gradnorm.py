"""GradNorm task weighting (Chen et al., "GradNorm", ICML 2018): the only place loss weights change.

The criterion returns *unweighted* losses ``{name: scalar tensor}``. Each training step::

    diagnostics = gradnorm.update(losses, shared_parameter=model.last_shared_layer.weight)
    total = gradnorm.weighted_total(losses)   # sum_i w_i * L_i, the weights detached
    total.backward()

``update`` balances the tasks' gradient norms at the last shared layer ``W``:

* ``G_i = w_i * ||dL_i/dW||``                       (weighted gradient norm of task i)
* ``r_i = L~_i / mean(L~)`` with ``L~_i = L_i / L_i(0)`` (relative inverse training rate)
* ``target_i = mean(G) * r_i ** alpha``             (detached: a constant for the weights)
* ``L_grad = sum_i |G_i - target_i|``, one step of the weights' own optimizer on it,
  then the weights are renormalised.

Design choices (where the paper leaves room):

* **Positivity by log-parameterisation**: the module stores ``log_weights`` and ``w_i = exp(s_i)``, so a
  weight can never go negative. Adam on ``s_i`` makes multiplicative steps of about ``lr`` per update.
  After each step ``s_i`` is also clamped to ``[log 1e-6, log len(task_names)]`` so that one wild step
  (SGD on a huge gradient) cannot underflow ``exp`` to 0 or overflow it.
* **Renormalisation keeps ``sum_i w_i == len(task_names)``**: ``initial_weights`` are rescaled to that
  sum at construction; after each step the weights of the tasks present in the batch are rescaled so
  their sum is what it was before the step. Tasks absent from ``losses`` keep their weight exactly
  (their parameters get no gradient, so Adam does not move them either), and the total stays fixed.
* ``L_i(0)`` is recorded the first time a task appears in ``update`` (not necessarily the first call:
  a caption source may join later). It lives in the buffer ``initial_losses`` (NaN = not yet seen).
* A task whose loss does not reach ``W`` (or does not require grad) has ``G_i = 0``.
* A step with a non-finite loss or gradient norm is skipped with a warning (weights unchanged).
* Under DDP each rank sees its own batch; ``update`` all-reduces the per-task gradients at ``W`` and the
  losses first (averaging over the ranks where the task is present), so all ranks take the same step
  and keep identical weights.
* ``state_dict()`` holds the log-weights, the initial losses and, through ``get_extra_state``, the
  optimizer state and ``alpha``/``lr``: a checkpoint round trip resumes exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: Floor for L_i(0), so a task that starts at zero loss does not divide by zero.
_MIN_INITIAL_LOSS = 1e-12
#: Floor for a weight: keeps exp(log-weight) from underflowing to 0 in float32 after a wild step.
_MIN_WEIGHT = 1e-6


class GradNorm(torch.nn.Module):
    """Learned loss weights that equalise the tasks' gradient norms at a shared layer.

    task_names:      the loss names the criterion returns (e.g. ``"giou_loss"``); order is fixed.
    alpha:           strength of the restoring force; 0 equalises gradient norms only, larger
                     values favour tasks whose loss has fallen the least relative to ``L_i(0)``.
    lr:              learning rate of the weights' own optimizer.
    initial_weights: optional ``{name: weight > 0}``; names left out start at 1; the whole set is
                     rescaled to sum to ``len(task_names)``.
    optimizer:       ``"adam"`` (as in the paper) or ``"sgd"``, applied to the log-weights.
    min_weight:      floor of every weight, so no task is ever switched off (the paper has none;
                     a floor keeps a task with large gradients, like box regression, learning).
    max_weight:      ceiling of every weight (default: the number of tasks). GradNorm boosts a task
                     whose gradient at W is small without limit; a ceiling keeps one such task (a
                     linear classifier on the embedding, say) from taking all the weight.
    distributed:     average gradients and losses over DDP ranks before each step (costs one
                     all-reduce of ``len(task_names) * W.numel()`` floats); ``None`` = when a process
                     group with more than one rank is initialised. Then every rank must call ``update``
                     every step, even with no losses.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        alpha: float = 1.5,
        lr: float = 0.025,
        initial_weights: Mapping[str, float] | None = None,
        optimizer: Literal["adam", "sgd"] = "adam",
        distributed: bool | None = None,
        min_weight: float = _MIN_WEIGHT,
        max_weight: float | None = None,
    ) -> None:
        super().__init__()
        names = tuple(task_names)
        if not names:
            raise ValueError("GradNorm needs at least one task name")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate task names in {names}")
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 < min_weight <= 1:
            raise ValueError(f"min_weight must be in (0, 1], got {min_weight}")
        self.min_weight = float(min_weight)
        if max_weight is not None and max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {max_weight}")
        # Weights sum to the number of tasks, so no weight can exceed it.
        self.max_weight = float(min(max_weight or len(task_names), len(task_names)))
        self.task_names = names
        self.alpha = float(alpha)
        self.lr = float(lr)
        self._index = {name: i for i, name in enumerate(names)}

        initial = dict(initial_weights or {})
        unknown = set(initial) - set(names)
        if unknown:
            raise ValueError(f"initial_weights for unknown tasks {sorted(unknown)}; tasks: {names}")
        values = torch.tensor([float(initial.get(name, 1.0)) for name in names], dtype=torch.float64)
        if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
            raise ValueError(f"initial_weights must be finite and > 0, got {initial}")
        values = values * (len(names) / values.sum())
        # One scalar parameter per task, so a task missing from a batch gets grad None and the
        # optimizer (Adam momentum included) leaves it alone.
        self.log_weights = torch.nn.ParameterList(torch.nn.Parameter(torch.log(v).to(torch.float32)) for v in values)
        self.register_buffer("initial_losses", torch.full((len(names),), float("nan")))
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(self.log_weights.parameters(), lr=lr)
        elif optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.log_weights.parameters(), lr=lr)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.optimizer_name = optimizer
        self.distributed = distributed

    @property
    def weights(self) -> dict[str, float]:
        """The current weight of every task, ``{name: w_i}``; they sum to ``len(task_names)``."""
        return {name: float(p.detach().exp()) for name, p in zip(self.task_names, self.log_weights)}

    def _check_names(self, losses: Mapping[str, Tensor]) -> None:
        unknown = set(losses) - set(self.task_names)
        if unknown:
            raise ValueError(f"losses for unknown tasks {sorted(unknown)}; GradNorm tasks: {self.task_names}")

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """``sum_i w_i * L_i`` over the tasks present in ``losses``; the weights are detached.

        losses: ``{name: scalar tensor}`` (unweighted), a subset of ``task_names``.
        Returns a scalar tensor on the losses' device that backpropagates into the model only.
        """
        self._check_names(losses)
        if not losses:
            raise ValueError("weighted_total needs at least one loss")
        terms = []
        for name, loss in losses.items():
            weight = self.log_weights[self._index[name]].detach().exp()
            terms.append(weight.to(device=loss.device, dtype=loss.dtype) * loss)
        return torch.stack(terms).sum()

    def update(self, losses: Mapping[str, Tensor], shared_parameter: Tensor) -> dict[str, float]:
        """One GradNorm step on the weights; call it before ``weighted_total(losses).backward()``.

        losses:           ``{name: scalar tensor}`` (unweighted), still attached to the graph.
        shared_parameter: the weight of the last layer shared by all tasks (``W`` in the paper).
        Returns ``{"gradnorm/<task>_grad": G_i, "gradnorm/<task>_weight": w_i}`` for present tasks,
        ``G_i`` measured before the step and ``w_i`` after it.
        """
        self._check_names(losses)
        device = shared_parameter.device
        idx, norms, loss_values = self._measure(losses, shared_parameter)
        names = [self.task_names[i] for i in idx]
        if not names:
            return {}

        # A sync point: the step is skipped on non-finite values, which needs them on the host.
        if not bool(torch.isfinite(norms).all() and torch.isfinite(loss_values).all()):
            log.warning("GradNorm: non-finite loss or gradient norm for %s; weights left unchanged", names)
            return self._diagnostics(names, torch.full_like(norms, float("nan")))

        initial = self.initial_losses[idx].to(device)
        unseen = torch.isnan(initial)
        if bool(unseen.any()):
            initial = torch.where(unseen, loss_values.clamp_min(_MIN_INITIAL_LOSS), initial)
            self.initial_losses[idx] = initial.to(self.initial_losses.device)

        log_w = torch.stack([self.log_weights[i] for i in idx]).to(device)
        weighted = log_w.exp() * norms  # G_i, differentiable in the log-weights
        if len(names) > 1:
            ratios = loss_values / initial
            inverse_rate = ratios / ratios.mean()
            target = (weighted.mean() * inverse_rate**self.alpha).detach()
            grad_loss = (weighted - target).abs().sum()
            self.optimizer.zero_grad(set_to_none=True)
            grad_loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._renormalise(idx, before=log_w.detach())
        return self._diagnostics(names, weighted.detach())

    def _is_distributed(self) -> bool:
        if self.distributed is not None:
            return self.distributed
        dist = torch.distributed
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _measure(self, losses: Mapping[str, Tensor], shared: Tensor) -> tuple[list[int], Tensor, Tensor]:
        """Task indices present, ``||dL_i/dW||`` and ``L_i`` for them (float32 on ``shared``'s device).

        Under DDP the gradients and losses are averaged over the ranks where the task is present
        (one all-reduce), so every rank computes the same step and the weights stay identical.
        """
        device = shared.device

        def local_grad(loss: Tensor) -> Tensor | None:
            # retain_graph: the model's own backward on weighted_total comes afterwards.
            if not loss.requires_grad:
                return None
            (grad,) = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
            return None if grad is None else grad.detach().float().flatten()

        if not self._is_distributed():
            idx = [i for i, name in enumerate(self.task_names) if name in losses]
            norms, values = [], []
            for i in idx:
                grad = local_grad(losses[self.task_names[i]])
                norms.append(torch.zeros((), device=device) if grad is None else grad.norm())
                values.append(losses[self.task_names[i]].detach().float().to(device).reshape(()))
            if not idx:
                return [], torch.zeros(0, device=device), torch.zeros(0, device=device)
            return idx, torch.stack(norms), torch.stack(values)

        n_tasks = len(self.task_names)
        grads = torch.zeros(n_tasks, shared.numel(), device=device)
        values = torch.zeros(n_tasks, device=device)
        counts = torch.zeros(n_tasks, device=device)
        for name, loss in losses.items():
            i = self._index[name]
            grad = local_grad(loss)
            if grad is not None:
                grads[i] = grad
            values[i] = loss.detach().float().to(device).reshape(())
            counts[i] = 1.0
        buffer = torch.cat([grads.flatten(), values, counts])
        torch.distributed.all_reduce(buffer)  # a sync point across ranks: every rank must call update
        grads = buffer[: grads.numel()].view_as(grads)
        values, counts = buffer[grads.numel() :].view(2, n_tasks)
        idx = torch.nonzero(counts > 0).flatten().tolist()
        present = torch.tensor(idx, device=device, dtype=torch.long)
        norms = (grads[present] / counts[present, None]).norm(dim=1)
        return idx, norms, values[present] / counts[present]

    @torch.no_grad()
    def _renormalise(self, idx: list[int], before: Tensor) -> None:
        """Rescale the stepped log-weights so their sum equals their sum before the step, keeping every
        weight within [min_weight, max_weight] (a few rescale-and-clamp rounds converge)."""
        after = torch.stack([self.log_weights[i] for i in idx])
        target = torch.logsumexp(before.to(after.device), 0)
        low, high = math.log(self.min_weight), math.log(self.max_weight)
        for _ in range(20):
            after = (after + target - torch.logsumexp(after, 0)).clamp(low, high)
        for i, value in zip(idx, after):
            self.log_weights[i].copy_(value)

    def _diagnostics(self, names: list[str], grads: Tensor) -> dict[str, float]:
        weights = self.weights
        out: dict[str, float] = {}
        for name, g in zip(names, grads.tolist()):
            out[f"gradnorm/{name}_grad"] = g
            out[f"gradnorm/{name}_weight"] = weights[name]
        return out

    # Checkpointing: parameters and the initial-loss buffer are ordinary state_dict entries; the
    # optimizer state (Adam moments) and the hyper-parameters travel as the module's extra state.
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "task_names": list(self.task_names),
            "alpha": self.alpha,
            "lr": self.lr,
            "optimizer_name": self.optimizer_name,
            "optimizer": self.optimizer.state_dict(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if list(state["task_names"]) != list(self.task_names):
            raise ValueError(f"checkpoint GradNorm tasks {state['task_names']} != {list(self.task_names)}")
        if state["optimizer_name"] != self.optimizer_name:
            raise ValueError(f"checkpoint GradNorm optimizer {state['optimizer_name']!r} != {self.optimizer_name!r}")
        self.alpha = float(state["alpha"])
        self.lr = float(state["lr"])
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return f"tasks={self.task_names}, alpha={self.alpha}, lr={self.lr}, optimizer={self.optimizer_name}"
