"""The keyword side of an index: a SQLite FTS5 full-text index of each segment's labels and captions.

Each segment has one ``keywords/keywords-<tag>.sqlite`` beside its objects shard and FAISS file,
written by the same commit (``compact.write_segment``), listed in the manifest with its size and
checksum, verified by the doctor and rebuilt from Parquet when damaged, and deleted by garbage
collection with its segment. It is never changed after it is written, so readers open it
``immutable`` (no locks, no journal files) and a crash can never leave it half-updated.

The table is *contentless* (``content=''``): it holds the inverted index and each row's column
sizes (what BM25 needs), not a second copy of the text, which stays in Parquet. Its rowid is the
object id. Words are split by SQLite's ``unicode61`` tokenizer (diacritics removed, so "cafe"
finds "café") and stemmed by ``porter`` (so "dogs" finds "dog").

Ranking is FTS5's BM25 within each segment, with the label weighted ``LABEL_WEIGHT`` times a
caption word. Segments are searched separately and their best hits merged by score, as
Elasticsearch's default ``query_then_fetch`` merges shards scored with each shard's own term
statistics: a small, fresh segment's word frequencies differ from the whole index's, so its
scores are slightly off the ones one index over everything would give, until it is merged.
"""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from objsearch.errors import BadQuery, IndexCorrupt, QueryTimeout, first_line
from objsearch.store.layout import durable_write
from objsearch.store.manifest import Manifest, Segment
from objsearch.store.segments import in_range

logger = logging.getLogger(__name__)

TABLE = "terms"
TOKENIZER = "porter unicode61 remove_diacritics 2"
LABEL_WEIGHT = 2.0  # a label word counts twice a caption word in BM25 (the label is the object's name)
MAX_QUERY_WORDS = 64  # a longer keyword query is refused (each word is one more posting list to read)
#: Words too common in captions to tell objects apart; dropped from a query that has other words.
STOP_WORDS = frozenset("a an and are as at be by for from in is it its of on or that the this to with".split())
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits: what the unicode61 tokenizer keeps
_PROGRESS_STEPS = 10_000  # SQLite virtual-machine steps between deadline checks


def write_keywords(path: Path, object_ids: np.ndarray, labels: Iterable[str], captions: Iterable[str | None]) -> None:
    """Write, durably and whole, the full-text index of one segment's objects to ``path``.

    object_ids: (N,) int64, the rows' ids; labels, captions: N strings each (a caption may be None).
    """
    def build(temporary: str) -> None:
        con = sqlite3.connect(temporary)
        try:
            con.execute("PRAGMA journal_mode = OFF")  # a new file: the rename is what makes it durable
            con.execute("PRAGMA synchronous = OFF")
            con.execute(f"CREATE VIRTUAL TABLE {TABLE} USING fts5(label, caption, content='', tokenize='{TOKENIZER}')")
            con.executemany(f"INSERT INTO {TABLE}(rowid, label, caption) VALUES (?, ?, ?)",
                            zip(np.asarray(object_ids, np.int64).tolist(), labels, captions))
            con.execute(f"INSERT INTO {TABLE}({TABLE}) VALUES ('optimize')")  # one b-tree per term: fewer pages per query
            con.commit()
        except sqlite3.Error as exc:  # an I/O failure, as every other file the commit writes reports it
            full = "full" in str(exc)
            raise OSError(errno.ENOSPC if full else errno.EIO, "No space left on device" if full else f"SQLite: {first_line(exc)}",
                          str(path)) from None
        finally:
            con.close()

    durable_write(path, build)


def stored_ids(path: Path) -> np.ndarray:
    """Sorted int64 ids of every row of a keywords file (the doctor's check); IndexCorrupt when
    SQLite cannot read it."""
    con = _open(path)
    try:
        return np.sort(np.array([row[0] for row in con.execute(f"SELECT rowid FROM {TABLE}")], np.int64))
    except sqlite3.Error as exc:
        raise IndexCorrupt(f"cannot read {path} ({first_line(exc)}); run `objsearch doctor --repair`") from None
    finally:
        con.close()


def match_expression(words: list[str], excluded_words: list[str] = ()) -> str:
    """An FTS5 query matching any of ``words`` and none of ``excluded_words``, each word quoted (so
    nothing a user types is read as FTS5 syntax); BadQuery when there is no word to look for."""
    if not words:
        raise BadQuery("a keyword search needs at least one word to look for (letters or digits)")
    if len(words) + len(excluded_words) > MAX_QUERY_WORDS:
        raise BadQuery(f"a keyword search takes at most {MAX_QUERY_WORDS} words")
    expression = " OR ".join(_quoted(w) for w in words)
    if excluded_words:
        expression = f"({expression}) NOT ({' OR '.join(_quoted(w) for w in excluded_words)})"
    return expression


def query_words(text: str) -> list[str]:
    """The distinct words of ``text`` to look for, lower-cased, in order; stop words are left out
    unless nothing else is left."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    content = [w for w in words if w not in STOP_WORDS]
    return content or words


def _quoted(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _open(path: Path) -> sqlite3.Connection:
    """A read-only connection to a keywords file that never changes (no locking, no journal)."""
    if not path.is_file():
        raise IndexCorrupt(f"{path} is missing; run `objsearch doctor --repair`")
    con = None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        con.execute(f"SELECT 1 FROM {TABLE} LIMIT 0")
        return con
    except sqlite3.Error as exc:
        if con is not None:
            con.close()
        raise IndexCorrupt(f"cannot read {path} ({first_line(exc)}); run `objsearch doctor --repair`") from None


class KeywordSet:
    """Searches the keywords files of one manifest's segments as one keyword index.

    ``tombstones``: sorted ids of deleted objects (never returned).
    """

    def __init__(self, root: Path, manifest: Manifest, tombstones: np.ndarray) -> None:
        self.root = root
        self.manifest = manifest
        self.tombstones = tombstones
        # One connection per file, used by one search at a time (its lock): a server searches from
        # a pool of threads, and a connection's progress handler (the deadline) is its own.
        self._connections: dict[str, tuple[sqlite3.Connection, threading.Lock]] = {}
        self._connections_lock = threading.Lock()

    def check_available(self) -> None:
        """BadQuery when a segment has no keywords file (an index written before format 3)."""
        if any(s.keywords is None for s in self.manifest.segments):
            raise BadQuery("this index has no keyword index yet (it was written by an older objsearch); "
                           "run `objsearch compact` on it once to add one")

    def search(self, expression: str, k: int, allowed_ids: np.ndarray | None = None,
               deadline: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` objects for an FTS5 ``expression`` (``match_expression``) over all segments
        -> (scores (k',) float64, BM25, higher is better; ids (k',) int64), best first, k' <= k.
        ``allowed_ids``: only these ids (sorted or not); ``deadline``: ``time.monotonic()`` past
        which the search stops with QueryTimeout."""
        self.check_available()
        allowed = None if allowed_ids is None else np.sort(np.asarray(allowed_ids, np.int64))
        all_scores, all_ids = [], []
        for segment in self.manifest.segments:
            if allowed is not None and not len(in_range(allowed, segment)):
                continue
            scores, ids = self._search_segment(segment, expression, k, allowed, deadline)
            all_scores.append(scores)
            all_ids.append(ids)
        if not all_ids:
            return np.zeros(0), np.zeros(0, np.int64)
        scores, ids = np.concatenate(all_scores), np.concatenate(all_ids)
        order = np.lexsort((ids, -scores))[:k]  # equal scores in id order, as the vector side ranks
        return scores[order], ids[order]

    def _search_segment(self, segment: Segment, expression: str, k: int, allowed: np.ndarray | None,
                        deadline: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Fetch a segment's best matches, widening the fetch (x4) until ``k`` survive the tombstones
        and ``allowed``, or the segment has no more."""
        con, lock = self._connection(segment)
        fetch = k + len(in_range(self.tombstones, segment))
        while True:
            with lock:
                rows = self._run(con, expression, fetch, deadline)
            ids = np.array([r[0] for r in rows], np.int64)
            scores = -np.array([r[1] for r in rows], np.float64)  # FTS5's bm25() is lower-is-better
            keep = ~np.isin(ids, self.tombstones)
            if allowed is not None:
                keep &= np.isin(ids, allowed)
            if keep.sum() >= k or len(rows) < fetch:
                return scores[keep][:k], ids[keep][:k]
            fetch *= 4

    def _run(self, con: sqlite3.Connection, expression: str, limit: int, deadline: float | None) -> list[tuple]:
        if deadline is not None:
            con.set_progress_handler(lambda: time.monotonic() >= deadline, _PROGRESS_STEPS)
        try:
            # ``rank MATCH`` sets the ranking function of this query, so ORDER BY rank ... LIMIT
            # picks the best by the weighted score (plain ``rank`` is unweighted bm25).
            return con.execute(f"SELECT rowid, rank FROM {TABLE} WHERE {TABLE} MATCH ? AND rank MATCH ? "
                               "ORDER BY rank LIMIT ?", (expression, f"bm25({LABEL_WEIGHT}, 1.0)", limit)).fetchall()
        except sqlite3.OperationalError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise QueryTimeout("the keyword search ran past the query's time limit and was stopped") from None
            if "fts5" in str(exc) or "syntax" in str(exc):
                raise BadQuery(f"bad keyword query: {first_line(exc)}") from None
            raise IndexCorrupt(f"cannot search the keyword index ({first_line(exc)}); run `objsearch doctor --repair`") from None
        except sqlite3.DatabaseError as exc:
            raise IndexCorrupt(f"cannot search the keyword index ({first_line(exc)}); run `objsearch doctor --repair`") from None
        finally:
            if deadline is not None:
                con.set_progress_handler(None, 0)

    def _connection(self, segment: Segment) -> tuple[sqlite3.Connection, threading.Lock]:
        """The segment's connection (opened on first use) and the lock its user holds."""
        path = segment.keywords.path
        with self._connections_lock:
            if path not in self._connections:
                self._connections[path] = (_open(self.root / path), threading.Lock())
            return self._connections[path]

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = list(self._connections.values()), {}
        for con, lock in connections:
            with lock:
                con.close()
