"""ImageNet-style class folders (``root/{wnid}/*.JPEG``) -> one :class:`Sample` per image (task "classification").

Classes are the sub-folders of ``root`` in sorted order and files are found exactly as
torchvision's ``ImageFolder`` finds them (its own helpers are used), so class indices agree with
any torchvision-trained model. ``categories`` are readable names when ``class_names`` maps
folder names (WordNet ids) to them, e.g. from ``LOC_synset_mapping.txt`` via
:func:`read_synset_mapping`; a folder missing from the mapping keeps its folder name (logged).
ImageNet-1k has two names twice ("crane", "maillot"): they stay as they are, distinct indices.

The Sample: ``class_id`` the class index, no boxes, ``phrases=[]``, ``image_id`` the path relative
to ``root`` (``n01440764/n01440764_10026.JPEG``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from training.data.coco import PackedRecords, PathLike, open_rgb
from training.data.sample import Sample

log = logging.getLogger(__name__)


def read_synset_mapping(path: PathLike) -> dict[str, str]:
    """``LOC_synset_mapping.txt`` lines ``n01440764 tench, Tinca tinca`` -> ``{"n01440764": "tench"}``.

    The readable name is the first comma-separated synonym.
    """
    names = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            wnid, _, synonyms = line.strip().partition(" ")
            if not synonyms:
                raise ValueError(f"{path}:{line_no}: expected '<wnid> <name>, <synonym>, ...'")
            names[wnid] = synonyms.split(",")[0].strip()
    return names


class ImageFolderClassification:
    """Map-style dataset over ``root/<class folder>/<image>``; ``class_names`` a mapping or a synset-mapping file."""

    source = "imagenet"

    def __init__(self, root: PathLike, class_names: Mapping[str, str] | PathLike | None = None) -> None:
        self.root = Path(root)
        if isinstance(class_names, (str, os.PathLike)):
            class_names = read_synset_mapping(class_names)
        folders, folder_index = find_classes(self.root)
        names = class_names or {}
        unnamed = [f for f in folders if f not in names]
        if class_names is not None and unnamed:
            log.warning("%d class folders have no readable name, keeping the folder name: %s", len(unnamed), unnamed[:5])
        self.class_folders: list[str] = folders
        self.categories: list[str] = [names.get(f, f) for f in folders]
        files = make_dataset(self.root, folder_index, extensions=IMG_EXTENSIONS)
        self._records = PackedRecords((os.path.relpath(path, self.root), index) for path, index in files)
        log.info("imagenet %s: %d images in %d classes", self.root, len(self._records), len(folders))

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Sample:
        relative_path, class_id = self._records[i]
        return Sample(
            image=open_rgb(self.root / relative_path),
            image_id=relative_path,
            source=self.source,
            tasks=("classification",),
            class_id=class_id,
        )
