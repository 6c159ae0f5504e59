"""The unit of indexing work, for any scheduler: "index this list of files into a part".

``index_files`` is the whole unit: decode the files (``decode.load_file``, the safe decoding every
path uses), detect and embed their objects, write one part (``parts``) into the index's staging
folder. It needs no index lock and no Ray: a plain loop, a batch-scheduler task on another machine
or the Ray actors of ``ray_runner`` run it (Ray splits it into a decode step on CPU workers and an
embed step in model actors, the two functions below). The index's writer then commits staged parts
(``staged.PartCommitter``): ``objsearch index`` does so at its start, so::

    files = pending_files(["/photos"], "/photos.index")          # once, anywhere
    for chunk in chunks(files, 256):                             # each in any process or machine
        index_files(chunk, staging_dir("/photos.index"), "bundled")
    index_folders(["/photos"], "/photos.index")                  # commits the parts; embeds what is left
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from indexer.decode import MAX_PIXELS, MAX_SIDE, DecodeResult, load_file
from indexer.discover import FileStat, discover, plan
from indexer.parts import write_part
from objsearch import schema
from objsearch.embedders.base import Detections, ObjectEmbedder, load_embedder
from objsearch.embedders.batch_size import choose_batch_size
from objsearch.errors import IndexNotFound
from objsearch.store.commit import ImageRecord, IndexWriter
from objsearch.store.layout import resolve_index_path
from objsearch.store.manifest import EmbedderInfo, read_manifest


def image_record(result: DecodeResult) -> ImageRecord:
    """The images-table row of a decoded (or failed) file; its id is given at commit."""
    image = result.image
    return ImageRecord(
        path=result.file.path,
        file_size=result.file.file_size,
        mtime_ns=result.file.mtime_ns,
        content_hash=result.content_hash,
        width=image.width if image else None,
        height=image.height if image else None,
        status=schema.STATUS_ERROR if result.error else schema.STATUS_OK,
        error=result.error,
    )


def embed_decoded(embedder: ObjectEmbedder, results: Sequence[DecodeResult]) -> list[Detections | None]:
    """Detections of each result in one forward pass (None where it did not decode); boxes are in
    the original image's pixels (the model saw it downscaled by ``image.scale``)."""
    good = [r for r in results if r.image is not None]
    detections = iter(embedder.detect([r.image.pixels for r in good]) if good else [])
    return [next(detections).scaled(1.0 / r.image.scale) if r.image is not None else None for r in results]


def index_files(files: Sequence[FileStat], staging: str | os.PathLike, embedder: ObjectEmbedder | str, *,
                batch_size: int = 0, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE) -> Path:
    """Decode and embed ``files`` and write what was found as one part in ``staging`` (see
    ``parts.staging_dir``); returns the part's path. Files that do not decode are in it with their
    reason, as the index records them. ``embedder``: an embedder or a ``--model`` string;
    ``batch_size``: images per forward pass (0 = the embedder's choice)."""
    if isinstance(embedder, str):
        embedder = load_embedder(embedder)
    size = batch_size or choose_batch_size(embedder)
    rows: list[tuple[ImageRecord, Detections | None]] = []
    for start in range(0, len(files), size):
        decoded = [load_file(file, max_pixels, max_side) for file in files[start:start + size]]
        rows += zip(map(image_record, decoded), embed_decoded(embedder, decoded))
    return write_part(Path(staging), EmbedderInfo.of(embedder), rows)


def pending_files(roots: Sequence[str | os.PathLike], index_path: str | os.PathLike | None = None,
                  exclude: Sequence[str] = ()) -> list[FileStat]:
    """The files below ``roots`` that the index at ``index_path`` lacks or holds an older version
    of (the rules of ``discover.plan``): the work to hand out. Holds the index's writer lock while
    it reads (so it waits for, or fails beside, a running writer), not afterwards."""
    root = resolve_index_path(index_path)
    roots = [os.path.abspath(r) for r in roots]
    try:
        manifest = read_manifest(root)
    except IndexNotFound:
        known = {}
    else:
        with IndexWriter(root, manifest.embedder, auto_compact=False) as writer:
            known = writer.known_images()
    todo = plan(discover(roots, exclude), known, roots)
    return todo.new + [file for file, _ in todo.changed]
