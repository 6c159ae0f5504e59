"""LVIS v1 (``lvis_v1_{train,val}.json``) -> one :class:`Sample` per image.

LVIS v1 is the COCO instances format with four differences, and :class:`LvisDetection` is the
COCO loader with those four hooks:

- categories carry ``frequency`` ("r" rare, "c" common, "f" frequent, by how many training
  images show them) and ``image_count``: kept as ``category_frequency`` / ``category_image_count``;
- images carry ``not_exhaustive_category_ids`` (categories present but not all instances boxed)
  and ``neg_category_ids`` (categories verified absent): evaluation needs both, so they are kept
  as ``not_exhaustive_category_ids[image_id]`` / ``neg_category_ids[image_id]``, translated to
  this loader's contiguous category indices (the Sample's ``category_ids`` space);
- images carry ``coco_url`` instead of ``file_name``: the file is the last part of the URL, looked
  for in ``image_dir`` itself and then in ``image_dir/<split folder>/`` (the URL's second-last
  part), because LVIS v1 lies over COCO 2017 and its val set draws on both train2017 and val2017:
  pass the folder of the images, or the COCO root holding ``train2017/`` and ``val2017/``;
- names are synset-like (``aerosol_can``, ``bow_(weapon)``): ``categories`` keeps them as they are,
  phrases and ``category_phrases`` use spaces (``aerosol can``) since a text encoder reads them.
"""

from __future__ import annotations

import numpy as np

from training.data.coco import CocoDetection, PathLike


class LvisDetection(CocoDetection):
    """Map-style LVIS v1 dataset; same Sample contract and options as :class:`CocoDetection`."""

    source = "lvis"

    def __init__(
        self,
        image_dir: PathLike,
        lvis_json: PathLike,
        with_masks: bool = True,
        captions_json: PathLike | None = None,
        **options,
    ) -> None:
        super().__init__(image_dir, lvis_json, with_masks, captions_json, **options)

    @staticmethod
    def _category_phrase(name: str) -> str:
        return name.replace("_", " ")

    def _relative_paths(self, image: dict) -> tuple[str, ...]:
        if "file_name" in image:  # LVIS v0.5, or a json rewritten with file names
            return (image["file_name"],)
        split_folder, file_name = image["coco_url"].rstrip("/").split("/")[-2:]
        return (file_name, f"{split_folder}/{file_name}")

    def _read_extra(self, data: dict, categories: list[dict]) -> None:
        self.category_frequency: list[str] = [c["frequency"] for c in categories]
        self.category_image_count: list[int] = [int(c.get("image_count", 0)) for c in categories]

        def indices(ids: list[int]) -> np.ndarray:
            return np.array(sorted(self._category_index[c] for c in ids), np.int64)

        self.not_exhaustive_category_ids: dict = {
            im["id"]: indices(im.get("not_exhaustive_category_ids", [])) for im in data["images"]
        }
        self.neg_category_ids: dict = {im["id"]: indices(im.get("neg_category_ids", [])) for im in data["images"]}
