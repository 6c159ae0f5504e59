"""Conceptual Captions (CC3M) image-caption pairs -> one :class:`Sample` per pair (task "caption").

Two layouts:

- :meth:`Cc3mCaptions.from_tsv`: ``caption<TAB>image`` per line, as the Google release
  (``Train_GCC-training.tsv``: caption, URL; no header). The second column is a path, resolved
  against ``image_root`` when relative, or a URL. URLs are never fetched: a URL row reads the local
  copy ``image_root/<host>/<path>`` (a ``wget -x`` mirror) or ``image_root/<last path part>``, and
  without one raises ``BadImage`` naming the row.
- :meth:`Cc3mCaptions.from_webdataset`: webdataset shards as img2dataset writes them, plain
  ``.tar`` files whose members ``{key}.jpg`` (or png/webp) + ``{key}.txt`` (the caption) + optional
  ``{key}.json`` (metadata, not read) form one sample per key. Read with the standard library's
  ``tarfile`` rather than the ``webdataset`` package: one dependency less for ~40 lines, and
  map-style random access, which webdataset's streaming pipeline does not give. Every member is
  indexed once at construction (tar headers only); ``__getitem__`` then seeks to the bytes.
  A key with a caption but no image is kept and raises ``BadImage`` when read (the trainer
  decides); a key with an image but no caption has nothing to train and is skipped (counted in
  the log). Compressed tars are refused (byte offsets into them do not exist).

The Sample's ``image_id`` is the 0-based data row of the TSV, or the webdataset key.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from objsearch.errors import BadImage
from training.data.coco import PackedRecords, PathLike, open_rgb
from training.data.sample import Sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
"""Webdataset member extensions read as the image, in order of preference."""


class Cc3mCaptions:
    """Map-style dataset of (image, caption) pairs; build it with :meth:`from_tsv` or :meth:`from_webdataset`."""

    source = "cc3m"

    def __init__(
        self,
        records: PackedRecords,
        *,
        tsv: Path | None = None,
        image_root: Path | None = None,
        tar_paths: tuple[Path, ...] = (),
    ) -> None:
        """Use :meth:`from_tsv` or :meth:`from_webdataset`; this takes their index."""
        self.categories: list[str] = []
        self._records = records
        self._tsv = tsv
        self._image_root = image_root
        self._tar_paths = tar_paths

    @classmethod
    def from_tsv(cls, tsv: PathLike, image_root: PathLike, *, has_header: bool = False) -> Cc3mCaptions:
        """Index ``tsv`` (``caption<TAB>image path or URL`` per line; skip line 1 when ``has_header``)."""
        tsv = Path(tsv)

        def rows() -> Iterator[tuple[int, str, str]]:
            with open(tsv, encoding="utf-8") as f:
                for line_no, line in enumerate(f, start=1):
                    if (has_header and line_no == 1) or not line.strip():
                        continue
                    columns = line.rstrip("\r\n").split("\t")
                    if len(columns) != 2:
                        raise ValueError(f"{tsv}:{line_no}: expected caption<TAB>image, got {len(columns)} columns")
                    yield line_no, columns[0].strip(), columns[1].strip()

        dataset = cls(PackedRecords(rows()), tsv=tsv, image_root=Path(image_root))
        log.info("cc3m %s: %d pairs", tsv, len(dataset))
        return dataset

    @classmethod
    def from_webdataset(cls, tar_paths: Iterable[PathLike]) -> Cc3mCaptions:
        """Index the members of webdataset shards (uncompressed ``.tar``), in the order given."""
        tar_paths = tuple(Path(p) for p in tar_paths)
        skipped: Counter = Counter()
        records = PackedRecords(r for t, path in enumerate(tar_paths) for r in _index_tar(t, path, skipped))
        log.info("cc3m %d shards: %d pairs; skipped %s", len(tar_paths), len(records), dict(skipped) or "nothing")
        return cls(records, tar_paths=tar_paths)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i: int) -> Sample:
        record = self._records[i]
        if self._tsv is not None:
            line_no, caption, location = record
            image = open_rgb(self._resolve(line_no, location))
            image_id: int | str = i % len(self)
        else:
            shard, key, image_member, caption_member = record
            image = self._read_member_image(shard, key, image_member)
            caption = self._read_member(shard, caption_member).decode("utf-8").strip()
            image_id = key
        return Sample(image=image, image_id=image_id, source=self.source, tasks=("caption",), caption=caption)

    def _resolve(self, line_no: int, location: str) -> Path:
        """A TSV row's image column -> the local file (or raise BadImage naming the row)."""
        url = urlsplit(location)
        if url.scheme not in ("http", "https", "ftp"):
            path = Path(location)
            return path if path.is_absolute() else self._image_root / path
        candidates = [self._image_root / url.netloc / url.path.lstrip("/"), self._image_root / posixpath.basename(url.path)]
        for path in candidates:
            if path.is_file():
                return path
        raise BadImage(
            f"{self._tsv}:{line_no} ({location})",
            f"a URL with no local copy (looked for {', '.join(map(str, candidates))}); URLs are not downloaded: "
            "fetch the images first (e.g. with img2dataset) and use Cc3mCaptions.from_webdataset",
        )

    def _read_member(self, shard: int, member: tuple[str, int, int]) -> bytes:
        _, offset, size = member
        with open(self._tar_paths[shard], "rb") as f:
            f.seek(offset)
            return f.read(size)

    def _read_member_image(self, shard: int, key: str, member: tuple[str, int, int] | None) -> Image.Image:
        tar = self._tar_paths[shard]
        if member is None:
            raise BadImage(f"{tar}:{key}", f"no image member ({', '.join('.' + e for e in IMAGE_EXTENSIONS)}) for this key")
        return open_rgb(self._read_member(shard, member), name=f"{tar}:{member[0]}")


def _index_tar(shard: int, path: Path, skipped: Counter) -> Iterator[tuple]:
    """Records ``(shard, key, image member | None, caption member)``; member = (name, data offset, size).

    The webdataset rule: a member's key is its path up to the first dot of its base name, the
    extension everything after it (``a/b.seg.jpg`` -> key ``a/b``, extension ``seg.jpg``).
    """
    members: dict[str, dict[str, tuple[str, int, int]]] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                folder, base = posixpath.split(info.name)
                stem, dot, extension = base.partition(".")
                if not dot or not stem:
                    continue
                members.setdefault(posixpath.join(folder, stem), {})[extension.lower()] = (
                    info.name, info.offset_data, info.size)
    except tarfile.ReadError as e:
        raise ValueError(f"{path}: not an uncompressed tar ({e}); webdataset shards are plain .tar files") from None
    for key, parts in members.items():
        image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
        if "txt" not in parts:
            skipped["keys without a .txt caption" if image else "keys with neither image nor caption"] += 1
            continue
        yield shard, key, image, parts["txt"]
