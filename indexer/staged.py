"""The driver's side of indexing: finished work into the index's one writer, committed in steps.

Work arrives as rows (an image record and its detections) from the local loop, or as parts
written by other processes (Ray actors, batch-scheduler tasks, an earlier run that was killed
before it committed them). A row is taken only for a file this run still has pending with the
same size and mtime, and each file once: a part written twice (a retried task) or covering a file
changed since adds nothing. Every ``commit_every`` images the writer commits; a part is deleted
only after the commit that holds all its rows, so a crash at any moment loses no finished work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from indexer.discover import FileStat
from indexer.parts import list_parts, part_embedder, read_part
from objsearch.embedders.base import Detections
from objsearch.store.commit import ImageRecord, IndexWriter

logger = logging.getLogger(__name__)


class PartCommitter:
    """Stages rows for ``pending`` files into ``writer``; ``replaces`` maps a changed file's path to
    the image id it replaces. Counts go to ``summary`` (an ``IndexSummary``)."""

    def __init__(self, writer: IndexWriter, pending: Sequence[FileStat], replaces: dict[str, int], summary, commit_every: int) -> None:
        self.writer = writer
        self._pending = {file.path: file for file in pending}
        self._replaces = replaces
        self.summary = summary
        self._commit_every = commit_every
        self._since_commit = 0
        self._parts_to_delete: list[Path] = []

    @property
    def remaining(self) -> list[FileStat]:
        """Files still to do, in the order they were planned."""
        return list(self._pending.values())

    def stage(self, record: ImageRecord, detections: Detections | None, *, recovered: bool = False) -> bool:
        """Stage one file's row if that file is pending in this version; commit when due.
        ``recovered``: the row was made by an earlier run. Returns whether it was taken."""
        file = self._pending.get(record.path)
        if file is None or (file.file_size, file.mtime_ns) != (record.file_size, record.mtime_ns):
            return False
        del self._pending[record.path]
        if record.path in self._replaces:
            self.writer.remove_images([self._replaces[record.path]])
        self.writer.add_image(record, detections)
        summary = self.summary
        if record.error:
            summary.skipped.append((record.path, record.error))
            logger.warning("skipped %s: %s", record.path, record.error)
        else:
            if recovered:
                summary.recovered += 1
            else:
                summary.indexed += 1
            summary.objects_added += len(detections) if detections is not None else 0
        self._since_commit += 1
        if self._since_commit >= self._commit_every:
            self.commit()
        return True

    def add_part(self, path: Path, *, recovered: bool = False) -> int:
        """Stage a part's rows (those still pending); the part is deleted after the commit that
        holds them. Returns the rows taken."""
        taken = sum(self.stage(record, detections, recovered=recovered) for record, detections in read_part(path))
        self._parts_to_delete.append(path)
        return taken

    def fail(self, path: str, reason: str) -> None:
        """A file this run could not embed (not the file's fault): reported, left for the next run."""
        self.summary.failed.append((path, reason))
        logger.warning("not indexed this run: %s: %s", path, reason)

    def take_staged(self, folder: Path) -> int:
        """Stage every part in ``folder`` that an earlier run (or another process) left, made by the
        index's embedder; parts of another embedder, unreadable ones and those with nothing pending
        are deleted. Returns the rows taken."""
        expected = self.writer.manifest.embedder
        taken = 0
        for path in list_parts(folder):
            made_by = part_embedder(path)
            if made_by is None or not made_by.same_model(expected):
                logger.warning("deleting staged part %s: %s", path.name, "unreadable" if made_by is None else f"made by another model ({made_by.name})")
                path.unlink(missing_ok=True)
                continue
            taken += self.add_part(path, recovered=True)
        if taken:
            logger.info("took %d files from parts staged by an earlier run", taken)
        return taken

    def commit(self) -> None:
        """Commit what is staged, then delete the parts whose rows are now durable."""
        started = time.perf_counter()
        self.writer.commit()
        self.summary.stage_seconds["write"] += time.perf_counter() - started
        self._since_commit = 0
        for path in self._parts_to_delete:
            path.unlink(missing_ok=True)
        self._parts_to_delete = []
