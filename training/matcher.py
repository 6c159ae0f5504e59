"""Hungarian matching of predicted queries to ground-truth objects (scipy's linear_sum_assignment)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from training.box_losses import cxcywh_to_xyxy, generalized_box_iou


class HungarianMatcher:
    """Matches each image's queries to its targets at minimum cost.

    cost = objectness * focal cost of calling the query an object + box_l1 * L1(cxcywh) - giou * GIoU.
    ``__call__(objectness (B, Q) logits, boxes (B, Q, 4) cxcywh, target_boxes: list of (n_i, 4))``
    -> list of (query indices (k,), target indices (k,)) int64 tensors, k = min(Q, n_i).
    """

    def __init__(self, objectness: float = 2.0, box_l1: float = 5.0, giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0) -> None:
        self.weights = (objectness, box_l1, giou)
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def cost_matrices(self, objectness: torch.Tensor, boxes: torch.Tensor,
                      target_boxes: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Per image the (Q, n_i) matching cost, or None when the image has no targets."""
        w_obj, w_l1, w_giou = self.weights
        prob = objectness.float().sigmoid()
        # Focal-style objectness cost (Deformable DETR): cheap to be positive where prob is high.
        positive = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        negative = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
        object_cost = positive - negative  # (B, Q)
        costs: list[torch.Tensor | None] = []
        for b, targets in enumerate(target_boxes):
            if len(targets) == 0:
                costs.append(None)
                continue
            pred = boxes[b].float()
            costs.append(w_l1 * torch.cdist(pred, targets.float(), p=1)
                         - w_giou * generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(targets.float()))
                         + w_obj * object_cost[b][:, None])
        return costs

    def __call__(self, objectness: torch.Tensor, boxes: torch.Tensor,
                 target_boxes: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        matches = []
        for cost in self.cost_matrices(objectness, boxes, target_boxes):
            if cost is None:
                matches.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
                continue
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return matches

    def match_many(self, objectness: torch.Tensor, boxes: torch.Tensor, target_boxes: list[torch.Tensor],
                   per_target: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One-to-many assignment for dense proposals: each target takes its ``per_target`` cheapest
        predictions; a prediction wanted by several targets goes to the cheapest. More positives per
        object than one-to-one matching: a denser signal that trains the proposals faster (as the
        auxiliary one-to-many heads of H-DETR / Co-DETR do)."""
        matches = []
        for cost in self.cost_matrices(objectness, boxes, target_boxes):
            if cost is None:
                matches.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
                continue
            k = min(per_target, cost.shape[0])
            chosen = cost.topk(k, dim=0, largest=False).indices  # (k, n)
            wanted = torch.zeros_like(cost, dtype=torch.bool)
            wanted.scatter_(0, chosen, True)
            masked = cost.masked_fill(~wanted, float("inf"))
            best_cost, best_target = masked.min(dim=1)
            rows = torch.nonzero(torch.isfinite(best_cost)).squeeze(1)
            matches.append((rows.cpu(), best_target[rows].cpu()))
        return matches
