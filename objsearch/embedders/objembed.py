"""The ``objembed`` embedder: an ObjEmbed checkpoint (or an in-memory model) behind the engine's contract.

``objsearch index --model path/to/checkpoint`` routes here. Every object gets the model's own 512-d
embedding; its label is the nearest of the checkpoint's category names in the text space (zero-shot),
its caption comes from the caption head (greedy), and its mask from the mask head (COCO RLE).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from objsearch.box_ops import xyxy_to_cxcywh
from objsearch.embedders.base import Detections, register_embedder
from objsearch.embedders.masks import rle

logger = logging.getLogger(__name__)

# Objects scoring below this (objectness x predicted IoU) are not stored, unless the checkpoint
# carries its own threshold (training writes the one of best detection F1 on the val split).
DEFAULT_SCORE_THRESHOLD = 0.3
DEFAULT_NMS_IOU = 0.7  # of two detections overlapping more than this (IoU), the lower-scored is dropped


class ObjEmbedEmbedder:
    name = "objembed"

    def __init__(self, model, *, version: str, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 max_objects: int = 50, with_captions: bool = True, with_masks: bool = True,
                 nms_iou: float | None = DEFAULT_NMS_IOU) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()
        self.version = version
        self.embed_dim = int(model.config.embed_dim)
        self.score_threshold = score_threshold
        self.max_objects = max_objects
        if nms_iou is not None and not 0 < nms_iou <= 1:
            raise ValueError(f"nms_iou must be in (0, 1] or None, got {nms_iou}")
        self.nms_iou = nms_iou  # class-agnostic duplicate suppression (None: keep every query)
        self.max_batch: int | None = None  # images per forward pass at most; set when CUDA runs out of memory
        self.with_captions = with_captions
        self.with_masks = with_masks
        self._label_embeddings = None
        #: One line the indexer logs as a warning once per run (None: nothing to say); see ``build``.
        self.indexing_caveat: str | None = None

    @property
    def device(self):
        return self.model.device

    @property
    def label_logit_scale(self) -> float:
        """The trained inverse temperature of object-text cosines (softmax over labels)."""
        return float(self.model.similarity_scale().detach())

    def preferred_batch_size(self, probe_images: int = 4) -> int:
        """Images per forward pass for this device: DEFAULT_BATCH_SIZE on CPU; on CUDA the largest
        power of two that fits in half the free memory, from the peak memory of a probe batch of noise
        images (which measures the forward pass, not every object's post-processing: hence the half,
        and ``detect`` halves the batch again if it still runs out of memory)."""
        from objsearch.embedders.batch_size import (
            DEFAULT_BATCH_SIZE,
            batch_size_for_memory,
        )

        if self.device.type != "cuda":
            return DEFAULT_BATCH_SIZE
        cuda, side = self.torch.cuda, self.model.config.image_size
        cuda.synchronize(self.device)
        cuda.reset_peak_memory_stats(self.device)
        before = cuda.memory_allocated(self.device)
        noise = np.random.default_rng(0).integers(0, 256, (probe_images, side, side, 3), dtype=np.uint8)
        self._detect_batch(list(noise))
        per_image = (cuda.max_memory_allocated(self.device) - before) / probe_images
        return batch_size_for_memory(per_image, cuda.mem_get_info(self.device)[0])

    def _inputs(self, images: Sequence[np.ndarray]):
        from objsearch.model.preprocess import letterbox

        boxed = [letterbox(image, self.model.config.image_size) for image in images]
        batch = self.torch.stack([tensor for tensor, _ in boxed]).to(self.device)
        return self.model.normalize(batch), [scale for _, scale in boxed]

    def label_embeddings(self):
        """(C, E) text embeddings of the checkpoint's category names (computed once)."""
        if self._label_embeddings is None and self.model.config.categories:
            with self.torch.no_grad():
                self._label_embeddings = self.model.encode_text(list(self.model.config.categories))
        return self._label_embeddings

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """One forward pass for the given images (the caller batches), split only if CUDA ran out of memory."""
        results: list[Detections] = []
        start = 0
        while start < len(images):
            chunk = images[start : start + (self.max_batch or len(images))]
            try:
                results.extend(self._detect_batch(chunk))
            except self.torch.cuda.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                self.max_batch = len(chunk) // 2  # the memory probe was optimistic: halve what failed, retry
                logger.warning("CUDA out of memory: at most %d images per forward pass from now on", self.max_batch)
                self.torch.cuda.empty_cache()
                continue
            start += len(chunk)
        return results

    def _detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        from objsearch.model.postprocess import postprocess

        torch = self.torch
        inputs, scales = self._inputs(images)
        with torch.no_grad():
            outputs = self.model(inputs)
            kept = postprocess(outputs, scales, [im.shape[:2] for im in images], self.score_threshold,
                               self.max_objects, with_masks=self.with_masks,
                               input_size=self.model.config.image_size, nms_iou=self.nms_iou)
            detections = []
            for objects in kept:
                embeddings = torch.from_numpy(objects.embeddings).to(self.device)
                detections.append(Detections(
                    objects.boxes_xyxy, objects.scores, self._labels(embeddings), objects.embeddings,
                    self._captions(embeddings) if self.with_captions else [],
                    [rle(m) for m in objects.masks] if objects.masks is not None else [],
                ))
        return detections

    def _labels(self, embeddings) -> list[str]:
        names = self.model.config.categories
        if not names or len(embeddings) == 0:
            return ["object"] * len(embeddings)
        best = (embeddings @ self.label_embeddings().T).argmax(-1)
        return [names[int(i)] for i in best]

    def _captions(self, embeddings) -> list[str | None]:
        return caption_objects(self.model, embeddings)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.encode_text(list(texts)).float().cpu().numpy()

    def embed_regions(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Each given box becomes a box query of the decoder (the same path denoising trains), whose
        embedding describes the object in that box. (N, 4) pixels -> (N, E)."""
        torch = self.torch
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        inputs, scales = self._inputs([image])
        normalised = xyxy_to_cxcywh(boxes * scales[0] / self.model.config.image_size)
        extra = torch.as_tensor(normalised, dtype=torch.float32, device=self.device)[None]
        with torch.no_grad():
            outputs = self.model(inputs, extra_boxes=extra, extra_groups=len(boxes))
        return outputs["extra"]["embeddings"][0].float().cpu().numpy()

    def describe_regions(self, image: np.ndarray, boxes_xyxy: np.ndarray) -> list[str]:
        """A caption for each given (N, 4) pixel box, from the caption head."""
        embeddings = self.torch.from_numpy(self.embed_regions(image, boxes_xyxy)).to(self.device)
        with self.torch.no_grad():
            return caption_objects(self.model, embeddings)


def caption_objects(model, embeddings, beam_size: int = 1) -> list[str]:
    """(N, E) object embeddings -> N captions from the caption head."""
    if len(embeddings) == 0:
        return []
    tokenizer = model.text.tokenizer
    ids = model.caption_head.generate(embeddings, tokenizer.cls_token_id, tokenizer.sep_token_id, beam_size)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def checkpoint_version(path: Path) -> str:
    """'objembed/<first 16 hex of the weights' sha256>': indexes refuse queries from other weights."""
    digest = hashlib.sha256()
    with open(path / "model.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"objembed/{digest.hexdigest()[:16]}"


@register_embedder("objembed")
def build(path: str | Path | None = None, device: str | None = None, **options) -> ObjEmbedEmbedder:
    """Load the checkpoint directory ``path`` (config.json + model.safetensors + tokenizer files)."""
    import torch

    from objsearch.errors import UnknownModel
    from objsearch.model.checkpoint import load_checkpoint, read_training_info

    if path is None:
        raise UnknownModel("the objembed embedder needs a checkpoint directory: --model path/to/checkpoint")
    path = Path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint(path, device=device)
    training = read_training_info(path)
    calibrated = training.get("score_threshold")
    source = "given" if "score_threshold" in options else "default"
    if calibrated is not None and "score_threshold" not in options:
        options["score_threshold"], source = float(calibrated), "calibrated in training"
    logger.info("ObjEmbed checkpoint %s loaded on %s; objects scoring >= %.3f are stored (%s)", path, device,
                options.get("score_threshold", DEFAULT_SCORE_THRESHOLD), source)
    embedder = ObjEmbedEmbedder(model, version=checkpoint_version(path), **options)
    embedder.indexing_caveat = synthetic_only_caveat(path, training)
    return embedder


def synthetic_only_caveat(path: Path, training: dict) -> str | None:
    """The warning for a checkpoint whose record (``training.data`` in its config.json, written by
    training) says it saw synthetic data only; None otherwise, and for checkpoints without a record."""
    data = training.get("data")
    if not isinstance(data, dict) or data.get("synthetic_only") is not True:
        return None
    sources = ", ".join(data.get("sources") or ()) or "synthetic"
    return (f"the model {path} was trained on synthetic shapes only ({sources}): it demonstrates the training "
            "pipeline, and its objects, labels and captions on real photos are not meaningful")
