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
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from indexer.discover import FileStat
from indexer.parts import list_parts, part_embedder, read_part
from objsearch.embedders.base import Detections
from objsearch.errors import first_line
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
        self._taken: set[str] = set()  # paths staged by this run
        self._known: dict[str, tuple[int, int]] | None = None  # committed (size, mtime) by path, read when needed

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
        self._taken.add(record.path)
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

    def add_part(self, path: Path, *, recovered: bool = False, keep_if_useful: bool = False) -> int:
        """Stage a part's rows (those still pending); returns the rows taken. The part is deleted
        after the commit that holds them, unless ``keep_if_useful`` and it holds rows for files
        outside this run that nothing has indexed yet (another folder, an --exclude)."""
        try:
            rows = list(read_part(path))
        except (OSError, ValueError, pa.ArrowException) as exc:  # written durably, so only a damaged disk gets here
            logger.warning("deleting unreadable staged part %s: %s", path.name, first_line(exc))
            path.unlink(missing_ok=True)
            return 0
        left = [record for record, detections in rows if not self.stage(record, detections, recovered=recovered)]
        if keep_if_useful and any(self._useful_elsewhere(record) for record in left):
            logger.info("keeping staged part %s: it holds files this run does not cover", path.name)
        else:
            self._parts_to_delete.append(path)
        return len(rows) - len(left)

    def _useful_elsewhere(self, record: ImageRecord) -> bool:
        """Whether a row this run did not take could still be committed by another run: its file
        is on disk as the row saw it, and the index holds no such version of it."""
        if record.path in self._taken:
            return False
        if self._known is None:
            self._known = {path: (r.file_size, r.mtime_ns) for path, r in self.writer.known_images().items()}
        if self._known.get(record.path) == (record.file_size, record.mtime_ns):
            return False
        try:
            stat = os.stat(record.path)
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (record.file_size, record.mtime_ns)

    def fail(self, path: str, reason: str) -> None:
        """A file this run could not embed (not the file's fault): reported, left for the next run."""
        self.summary.failed.append((path, reason))
        logger.warning("not indexed this run: %s: %s", path, reason)

    def take_staged(self, folder: Path, *, recovered: bool = True) -> int:
        """Stage the parts in ``folder`` that other processes (an earlier run, a batch scheduler's
        tasks, this run's retried tasks: ``recovered=False``) left, made by the index's embedder.
        Parts of another embedder are deleted (they can never be committed here), and parts of
        which nothing is pending unless they hold work for other runs. Returns the rows taken."""
        expected = self.writer.manifest.embedder
        taken = 0
        for path in list_parts(folder):
            if path in self._parts_to_delete:  # already taken by this run
                continue
            made_by = part_embedder(path)
            if made_by is None or not made_by.same_model(expected):
                logger.warning("deleting staged part %s: %s", path.name, "unreadable" if made_by is None else f"made by another model ({made_by.name})")
                path.unlink(missing_ok=True)
                continue
            taken += self.add_part(path, recovered=recovered, keep_if_useful=True)
        if taken and recovered:
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
