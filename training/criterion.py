"""SetCriterion: every loss term of ObjEmbed, returned UNWEIGHTED; ``task_losses`` applies the weights.

Terms (all scalars): objectness, box_l1, giou (summed over decoder layers and denoising queries),
quality, align, zeroshot, mask_bce, mask_dice, caption, classify. A term whose supervision is absent
from the batch is left out of the dict (not returned as 0), so GradNorm skips its task that step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from training import distributed
from training.box_losses import cxcywh_to_xyxy, generalized_box_iou, paired_iou
from training.config import TASK_TERMS, LossWeights
from training.data.collate import Target
from training.matcher import HungarianMatcher
from training.ohem import ohem_weights
from training.phrase_bank import PhraseBank
from training.phrase_relations import overlapping


@dataclass
class MatchedObjects:
    """Flattened matched (query, target) pairs of the last decoder layer plus denoising queries.

    embeddings: (N, E); target_index: (N,) index into the flattened list of targets' objects;
    image_index: (N,) batch index; from_denoising: (N,) bool.
    """

    embeddings: torch.Tensor
    image_index: torch.Tensor
    object_index: torch.Tensor
    from_denoising: torch.Tensor


class SetCriterion:
    def __init__(self, model, matcher: HungarianMatcher, tasks: list[str],
                 category_weights: torch.Tensor | None = None, ohem_keep: float = 0.7,
                 proposals_per_object: int = 4, phrase_bank: PhraseBank | None = None) -> None:
        self.model = model
        self.matcher = matcher
        self.tasks = set(tasks)
        self.category_weights = category_weights
        self.ohem_keep = ohem_keep
        self.proposals_per_object = proposals_per_object
        self.phrase_bank = phrase_bank  # cross-batch text negatives for the alignment loss (None: in-batch only)

    # ---- detection ----------------------------------------------------------------------------
    def detection_terms(self, outputs: dict, targets: list[Target], dn_pairs: list[tuple]) -> tuple[dict, list]:
        det_images = [b for b, t in enumerate(targets) if "detection" in t.tasks]
        num_boxes = max(1.0, float(sum(len(targets[b].boxes) for b in det_images)))
        num_boxes = distributed.mean_over_ranks(num_boxes)
        terms = {"objectness": 0.0, "box_l1": 0.0, "giou": 0.0}
        last_matches = None
        layers = outputs["boxes"].shape[0]
        all_images = [b for b, t in enumerate(targets) if len(t.boxes)]
        for layer in range(layers):
            boxes, logits = outputs["boxes"][layer], outputs["objectness"][layer]
            matches = self.matcher(logits, boxes, [t.boxes for t in targets])
            if layer == layers - 1:
                last_matches = matches
            self._add_layer_terms(terms, boxes, logits, targets, matches, det_images, all_images, num_boxes)
        if "extra" in outputs and dn_pairs:
            extra = outputs["extra"]
            for layer in range(layers):
                self._add_layer_terms(terms, extra["boxes"][layer], extra["objectness"][layer], targets, dn_pairs,
                                      det_images, all_images, num_boxes)
        if "proposals" in outputs:  # the dense proposals are supervised like one more layer
            proposals = outputs["proposals"]
            matches = self.matcher.match_many(proposals["objectness"], proposals["boxes"], [t.boxes for t in targets],
                                              self.proposals_per_object)
            self._add_layer_terms(terms, proposals["boxes"], proposals["objectness"], targets, matches,
                                  det_images, all_images, num_boxes)
        if not det_images:
            terms.pop("objectness")
        pred, gold = self._gather_boxes(outputs["boxes"][-1], targets, last_matches, all_images)
        if len(pred):
            iou = paired_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gold)).detach()
            quality = self._gather_rows(outputs["quality"], last_matches, all_images)
            terms["quality"] = F.binary_cross_entropy_with_logits(quality, iou)
        return terms, last_matches

    def _add_layer_terms(self, terms, boxes, logits, targets, matches, det_images, all_images, num_boxes) -> None:
        """Adds one prediction layer's objectness (detection samples only) and box terms to ``terms``."""
        if det_images:
            goal = torch.zeros_like(logits)
            for b in det_images:
                goal[b, matches[b][0]] = 1.0
            terms["objectness"] = terms["objectness"] + sigmoid_focal_loss(
                logits[det_images], goal[det_images], reduction="sum") / num_boxes
        l1, giou = self._box_terms(boxes, targets, matches, all_images)
        terms["box_l1"] = terms["box_l1"] + l1 / num_boxes
        terms["giou"] = terms["giou"] + giou / num_boxes

    def _gather_boxes(self, boxes, targets, matches, images):
        pred = [boxes[b, matches[b][0]] for b in images]
        gold = [targets[b].boxes[matches[b][1]] for b in images]
        if not pred:
            return boxes.new_zeros(0, 4), boxes.new_zeros(0, 4)
        return torch.cat(pred), torch.cat(gold).to(boxes.device)

    @staticmethod
    def _gather_rows(values, matches, images):
        return torch.cat([values[b, matches[b][0]] for b in images]) if images else values.new_zeros(0)

    def _box_terms(self, boxes, targets, matches, images):
        pred, gold = self._gather_boxes(boxes, targets, matches, images)
        if not len(pred):
            return boxes.sum() * 0, boxes.sum() * 0
        l1 = F.l1_loss(pred, gold, reduction="sum")
        giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(gold)))).sum()
        return l1, giou

    # ---- object-level terms --------------------------------------------------------------------
    def matched_objects(self, outputs: dict, targets: list[Target], matches: list, dn_pairs: list) -> MatchedObjects:
        rows, images, objects, dn = [], [], [], []
        sources = [(outputs["embeddings"], matches, False)]
        if "extra" in outputs and dn_pairs:
            sources.append((outputs["extra"]["embeddings"], dn_pairs, True))
        for embeddings, pairs, is_dn in sources:
            for b, (queries, target_idx) in enumerate(pairs):
                if len(queries) == 0:
                    continue
                rows.append(embeddings[b, queries])
                images.append(torch.full((len(queries),), b, dtype=torch.long))
                objects.append(target_idx)
                dn.append(torch.full((len(queries),), is_dn))
        if not rows:
            e = outputs["embeddings"]
            empty = torch.zeros(0, dtype=torch.long)
            return MatchedObjects(e.new_zeros(0, e.shape[-1]), empty, empty, empty.bool())
        return MatchedObjects(torch.cat(rows), torch.cat(images), torch.cat(objects), torch.cat(dn))

    def align_term(self, objects: MatchedObjects, targets: list[Target]) -> torch.Tensor | None:
        """Symmetric InfoNCE between object embeddings and their phrases. Negatives are every other
        phrase of the batch (in-batch, from other images too; gathered from all ranks under DDP).
        Identical phrases are merged into one column, so two "red star"s are never each other's negatives,
        and overlapping phrases ("a red star", "a small red star"; see training.phrase_relations) are
        ignored in both directions: they may describe the same object.
        With a phrase bank, each object is also scored against the recent phrases of its own source
        (object-to-text only): cross-batch negatives the batch is too small to hold."""
        keep = [i for i in range(len(objects.image_index))
                if targets[objects.image_index[i]].phrases]
        if not keep and not distributed.is_distributed():
            return None
        keep_t = torch.as_tensor(keep, dtype=torch.long)
        labelled = [(targets[objects.image_index[i]].phrases[objects.object_index[i]],
                     targets[objects.image_index[i]].source) for i in keep]
        # Collective calls: every rank joins them, even one with no phrases this step.
        embeddings = distributed.gather_with_grad(objects.embeddings[keep_t])
        labelled = distributed.gather_objects(labelled)
        if not labelled:
            return None
        phrases, sources = [p for p, _ in labelled], [s for _, s in labelled]
        vocabulary = list(dict.fromkeys(phrases))
        column = torch.as_tensor([vocabulary.index(p) for p in phrases], device=embeddings.device)
        bank, bank_sources = self._bank_negatives(phrases, sources, set(vocabulary))
        logits = self.model.similarity(embeddings, self.model.encode_text(vocabulary + bank))  # (N, P + M)
        if bank:  # an object meets only its own source's remembered phrases
            source_ids = {source: i for i, source in enumerate(dict.fromkeys(sources))}
            object_source = torch.as_tensor([source_ids[s] for s in sources], device=logits.device)
            bank_source = torch.as_tensor([source_ids[s] for s in bank_sources], device=logits.device)
            foreign = object_source[:, None] != bank_source[None, :]  # (N, M)
            logits = torch.cat([logits[:, :len(vocabulary)], logits[:, len(vocabulary):].masked_fill(foreign, -1e4)], 1)
        ambiguous = torch.as_tensor(overlapping(vocabulary, vocabulary + bank), device=logits.device)[column]  # (N, P + M)
        logits = logits.masked_fill(ambiguous, -1e4)
        object_to_text = F.cross_entropy(logits, column)
        logits = logits[:, :len(vocabulary)]
        positives = column[:, None] == torch.arange(len(vocabulary), device=column.device)[None, :]  # (N, P)
        log_prob = logits.T.log_softmax(dim=1)  # over objects, per phrase
        text_to_object = -(torch.logsumexp(log_prob.masked_fill(~positives.T, -1e4), dim=1)).mean()
        return (object_to_text + text_to_object) / 2

    def _bank_negatives(self, phrases: list[str], sources: list[str], batch_phrases: set[str]) -> tuple[list, list]:
        """The bank's phrases (and their sources) for the sources of this step, then this step's
        phrases remembered. Every rank sees the same gathered phrases, so the banks agree."""
        if self.phrase_bank is None:
            return [], []
        bank, bank_sources = [], []
        for source in dict.fromkeys(sources):
            negatives = self.phrase_bank.negatives(source, batch_phrases)
            bank += negatives
            bank_sources += [source] * len(negatives)
        for source in dict.fromkeys(sources):
            self.phrase_bank.add(source, [p for p, s in zip(phrases, sources) if s == source])
        return bank, bank_sources

    def class_terms(self, outputs: dict, objects: MatchedObjects, targets: list[Target]) -> dict:
        """zeroshot: objects vs their source's category-name embeddings; classify: the linear head.
        Both per-object losses are OHEM-weighted (hard examples kept, rare categories up-weighted)."""
        terms = {}
        labelled = [i for i in range(len(objects.image_index))
                    if targets[objects.image_index[i]].category_names
                    and int(targets[objects.image_index[i]].labels[objects.object_index[i]]) >= 0]
        if not labelled:
            return terms
        idx = torch.as_tensor(labelled, dtype=torch.long)
        labels = torch.stack([targets[objects.image_index[i]].labels[objects.object_index[i]] for i in labelled])
        labels = labels.to(objects.embeddings.device)
        names_per_object = [tuple(targets[objects.image_index[i]].category_names) for i in labelled]
        losses = []
        for names in dict.fromkeys(names_per_object):  # one group per source label set
            members = torch.as_tensor([k for k, n in enumerate(names_per_object) if n == names])
            logits = self.model.similarity(objects.embeddings[idx[members]], self.model.encode_text(list(names)))
            losses.append((members, F.cross_entropy(logits, labels[members], reduction="none")))
        per_object = torch.zeros(len(labelled), device=labels.device)
        for members, loss in losses:
            per_object = per_object.index_put((members.to(labels.device),), loss)
        terms["zeroshot"] = self._ohem_mean(per_object, labels)
        classifier_names = tuple(self.model.config.categories)
        own = [k for k, n in enumerate(names_per_object) if n == classifier_names]
        if own and "class_logits" in outputs:
            own_t = torch.as_tensor(own)
            logits = self.model.classify(objects.embeddings[idx[own_t]])
            per_object = F.cross_entropy(logits, labels[own_t], reduction="none")
            terms["classify"] = self._ohem_mean(per_object, labels[own_t])
        return terms

    def _ohem_mean(self, per_object: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.category_weights is None:
            return per_object.mean()
        weights = ohem_weights(per_object.detach(), labels, self.category_weights.to(labels.device),
                               keep_fraction=self.ohem_keep)
        return (weights * per_object).sum() / weights.sum().clamp(min=1e-6)

    def mask_terms(self, outputs: dict, targets: list[Target], matches: list) -> dict:
        logits, gold = [], []
        for b, target in enumerate(targets):
            if target.masks is None or len(matches[b][0]) == 0:
                continue
            logits.append(outputs["mask_logits"][b, matches[b][0]])
            gold.append(target.masks[matches[b][1]].to(outputs["mask_logits"].device))
        if not logits:
            return {}
        logits, gold = torch.cat(logits).flatten(1), torch.cat(gold).flatten(1)
        prob = logits.sigmoid()
        dice = 1 - (2 * (prob * gold).sum(1) + 1) / (prob.sum(1) + gold.sum(1) + 1)
        return {"mask_bce": F.binary_cross_entropy_with_logits(logits, gold), "mask_dice": dice.mean()}

    def caption_term(self, objects: MatchedObjects, targets: list[Target]) -> torch.Tensor | None:
        """Token cross-entropy of describing each detected object from its embedding (its target's
        ``caption_targets``)."""
        keep = [i for i in range(len(objects.image_index))
                if not objects.from_denoising[i] and "detection" in targets[objects.image_index[i]].tasks
                and targets[objects.image_index[i]].phrases]
        if not keep:
            return None
        phrases = [targets[objects.image_index[i]].caption_targets[objects.object_index[i]] for i in keep]
        tokenizer = self.model.text.tokenizer
        max_len = self.model.config.caption_max_length + 1
        ids = tokenizer(phrases, padding=True, truncation=True, max_length=max_len, return_tensors="pt")["input_ids"]
        ids = ids.to(objects.embeddings.device)
        inputs, gold = ids[:, :-1], ids[:, 1:].masked_fill(ids[:, 1:] == tokenizer.pad_token_id, -100)
        head = self.model.caption_head
        hidden = head.hidden(objects.embeddings[torch.as_tensor(keep)], inputs)  # (N, T, D)
        scored = gold != -100  # padding positions never meet the vocabulary: same loss, less work
        return F.cross_entropy(head.vocabulary_logits(hidden[scored]), gold[scored])

    # ---- all together ---------------------------------------------------------------------------
    def __call__(self, outputs: dict, targets: list[Target], dn_pairs: list) -> dict[str, torch.Tensor]:
        terms, matches = self.detection_terms(outputs, targets, dn_pairs)
        objects = self.matched_objects(outputs, targets, matches, dn_pairs)
        if self.tasks & {"grounding", "classification"}:
            class_terms = self.class_terms(outputs, objects, targets)
            if "grounding" in self.tasks:
                align = self.align_term(objects, targets)
                if align is not None:
                    terms["align"] = align
                if "zeroshot" in class_terms:
                    terms["zeroshot"] = class_terms["zeroshot"]
            if "classification" in self.tasks and "classify" in class_terms:
                terms["classify"] = class_terms["classify"]
        if "mask" in self.tasks:
            terms.update(self.mask_terms(outputs, targets, matches))
        if "caption" in self.tasks:
            caption = self.caption_term(objects, targets)
            if caption is not None:
                terms["caption"] = caption
        if "detection" not in self.tasks:
            for name in TASK_TERMS["detection"]:
                terms.pop(name, None)
        return {k: v for k, v in terms.items() if torch.is_tensor(v)}


def task_losses(terms: dict[str, torch.Tensor], weights: LossWeights) -> dict[str, torch.Tensor]:
    """The one place loss coefficients are applied: terms -> one loss per task (only tasks present)."""
    tasks = {}
    for task, names in TASK_TERMS.items():
        present = [weights.__dict__[n] * terms[n] for n in names if n in terms]
        if present:
            tasks[task] = torch.stack(present).sum()
    return tasks
