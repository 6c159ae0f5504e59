"""Query an index: text -> objects, object -> objects, image region -> objects.

    index = objsearch.open_index(".objsearch")
    hits = index.search_text("red umbrella", k=10, where="width > 500")
    best = hits[0]  # best.path, best.box_xyxy (pixels), best.similarity
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from objsearch.embedders.base import ObjectEmbedder, load_embedder
from objsearch.errors import BadQuery, IndexCorrupt, NotFound
from objsearch.fusion import reciprocal_rank_fusion
from objsearch.hits import Hit
from objsearch.query import Query, combine
from objsearch.store.catalog import DEFAULT_TIME_LIMIT_S, Catalog
from objsearch.store import keywords
from objsearch.store.gc import ReaderLease, leased_manifest
from objsearch.store.layout import resolve_index_path
from objsearch.store.manifest import EmbedderInfo, Manifest, check_embedder, missing_or_resized
from objsearch.store.segments import SegmentSet

if TYPE_CHECKING:
    from objsearch.image_decode import DecodedImage

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 10_000  # longer text is refused: the text encoder reads ~128 tokens anyway
SEARCH_MODES = ("vector", "keyword", "hybrid")
KEYWORD_DEPTH = 100  # a keyword search asks for at least this many
FUSION_DEPTH = 1000  # a hybrid search fuses each side's best this many, whatever its k: a page of
# hits and the next are cut from one ranking (fusing the best 100 and the best 130 would rank differently)


@dataclass
class Ranking:
    """Object ids best first, with the scores the ranking knows of them: ``scores`` maps a Hit field
    ("similarity", "keyword_score", "fused_score") to a (N,) array beside ``ids`` (NaN = unknown).
    ``exhausted``: the ranking holds every object it could (asking for more gives no more)."""

    ids: np.ndarray
    scores: dict[str, np.ndarray]
    exhausted: bool

    def scores_at(self, position: int) -> dict[str, float]:
        return {name: float(values[position]) for name, values in self.scores.items() if not np.isnan(values[position])}


def _wanted(k: int, exclude: Sequence[int], per_image: bool) -> int:
    """How many ranked objects a search for k hits asks for first: the excluded ones may be among
    them, and per image it takes several objects to find k images."""
    return (k + len(exclude)) * (4 if per_image else 1)


def _scores_of(ids: np.ndarray, ranked_ids: np.ndarray, ranked_scores: np.ndarray) -> np.ndarray:
    """(len(ids),) the score ``ranked_scores`` gives each of ``ids`` in ``ranked_ids``; NaN where none."""
    position = {object_id: i for i, object_id in enumerate(ranked_ids.tolist())}
    return np.array([ranked_scores[position[i]] if i in position else np.nan for i in ids.tolist()], np.float64)


class Index:
    """A read-only view of one committed generation of an index.

    ``time_limit_s``: the longest one search (its filter, vector search rounds and row look-ups
    together) or one SQL statement may take (None = no limit); past it the query stops with
    ``QueryTimeout``. ``lease``: the reader lease that keeps this generation's files on disk
    (``objsearch.store.gc``), released by ``close``.
    """

    def __init__(self, root: Path, manifest: Manifest, embedder: ObjectEmbedder | str | None = None,
                 time_limit_s: float | None = DEFAULT_TIME_LIMIT_S, lease: ReaderLease | None = None,
                 previous: "Index | None" = None) -> None:
        self.root = root
        self.manifest = manifest
        self.time_limit_s = time_limit_s
        self._embedder: ObjectEmbedder | None = None
        if isinstance(embedder, str):
            embedder = load_embedder(embedder)
        if embedder is None and previous is not None and previous.manifest.embedder == manifest.embedder:
            embedder = previous._embedder  # already loaded (or None: loaded when first needed)
        if embedder is not None:
            check_embedder(manifest, EmbedderInfo.of(embedder))
            self._embedder = embedder
        self._lease = lease
        self.catalog = Catalog(root, manifest, time_limit_s, previous=previous.catalog if previous else None)
        self.vectors = SegmentSet(root, manifest, previous=previous.vectors if previous else None)
        self._keywords: keywords.KeywordSet | None = None

    # -- lazily loaded parts -----------------------------------------------------------------------
    @property
    def embedder(self) -> ObjectEmbedder:
        if self._embedder is None:
            built = self.manifest.embedder
            embedder = load_embedder(built.source or built.name)
            check_embedder(self.manifest, EmbedderInfo.of(embedder))
            self._embedder = embedder
        return self._embedder

    @property
    def keywords(self) -> keywords.KeywordSet:
        if self._keywords is None:
            self._keywords = keywords.KeywordSet(self.root, self.manifest, self.vectors.tombstones)
        return self._keywords

    # -- searches ----------------------------------------------------------------------------------
    def search_text(self, query: str, k: int = 10, **options) -> list[Hit]:
        """Objects best matching a text query. Options: where, min_score, per_image."""
        query = _check_text(query)
        embedding = self.embedder.embed_texts([query])[0]
        return self.search_embedding(embedding, k, **options)

    def search(self, query: Query | str, k: int = 10, *, mode: str = "vector", **options) -> list[Hit]:
        """Objects best matching a composed query (``objsearch.query``: weighted text, object and
        region terms added and subtracted), given as a ``Query`` or its text. Objects named in
        the query are left out of the results.

        mode: "vector" ranks by the cosine of the objects' embeddings with the combined query
              embedding; "keyword" by the BM25 score of their labels and captions for the words of
              the query's text terms (any of the positive terms' words, none of the negative
              terms'; weights do not apply; no model is loaded); "hybrid" fuses both rankings by
              reciprocal rank (``objsearch.fusion``).
        Options as ``search_embedding``; ``min_score`` (a similarity) only in vector mode.
        """
        query = (Query.parse(query) if isinstance(query, str) else query).check()
        if mode not in SEARCH_MODES:
            raise BadQuery(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
        named = tuple(t.object_id for t in query.terms if t.object_id is not None)
        exclude = tuple(set(named) | set(options.pop("exclude", ())))
        if mode == "vector":
            return self.search_embedding(self._query_embedding(query), k, exclude=exclude, **options)
        if options.get("min_score") is not None:
            raise BadQuery(f"a minimum similarity applies to vector search only, not to {mode} search")
        options.pop("min_score", None)
        expression = self._keyword_expression(query, mode)
        if mode == "keyword":
            return self._search_ranked(lambda depth, allowed, deadline: self._keyword_ranking(expression, depth, allowed, deadline), k,
                                       first_depth=max(KEYWORD_DEPTH, _wanted(k, exclude, options.get("per_image", False))),
                                       exclude=exclude, **options)
        embedding = self._query_embedding(query)
        return self._search_ranked(lambda depth, allowed, deadline: self._hybrid_ranking(embedding, expression, depth, allowed, deadline), k,
                                   first_depth=FUSION_DEPTH, exclude=exclude, embedding=embedding, **options)

    def _query_embedding(self, query: Query) -> np.ndarray:
        """The (D,) unit embedding of a checked query: its terms' embeddings combined (``combine``)."""
        texts = [i for i, term in enumerate(query.terms) if term.kind == "text"]
        embeddings: list[np.ndarray | None] = [None] * len(query.terms)
        if texts:
            for i, embedding in zip(texts, self.embedder.embed_texts([_check_text(query.terms[i].text) for i in texts])):
                embeddings[i] = embedding
        for i, term in enumerate(query.terms):
            if term.kind == "object":
                embeddings[i] = self._object_embedding(term.object_id)
            elif term.kind == "region":
                from objsearch.image_decode import decode_image

                embeddings[i] = self._region_embedding(decode_image(term.image), term.box)
        return combine(np.stack(embeddings), np.array([t.weight for t in query.terms]))

    def _keyword_expression(self, query: Query, mode: str) -> str | None:
        """The FTS5 expression for the words of ``query``'s text terms (``keywords.match_expression``);
        None in hybrid mode when the query has no words (its vector ranking stands alone)."""
        if mode == "keyword" and any(term.kind != "text" for term in query.terms):
            raise BadQuery("a keyword search matches words: an @object or @image term needs the vector or hybrid mode")
        positive = [w for t in query.terms if t.kind == "text" and t.weight > 0 for w in keywords.query_words(_check_text(t.text))]
        negative = [w for t in query.terms if t.kind == "text" and t.weight < 0 for w in keywords.query_words(_check_text(t.text))]
        positive = list(dict.fromkeys(w for w in positive if w not in negative))
        if mode == "hybrid" and not positive:
            return None
        return keywords.match_expression(positive, list(dict.fromkeys(negative)))

    def _keyword_ranking(self, expression: str, depth: int, allowed, deadline) -> Ranking:
        scores, ids = self.keywords.search(expression, depth, allowed, deadline)
        return Ranking(ids, {"keyword_score": scores}, exhausted=len(ids) < depth)

    def _vector_ranking(self, embedding: np.ndarray, depth: int, allowed) -> Ranking:
        """The ``depth`` objects (of ``allowed`` ids, or all) nearest ``embedding`` by inner product."""
        # The most FAISS can return: an allowed id need not be in FAISS (nor a FAISS id in Parquet).
        available = self.vectors.ntotal if allowed is None else min(len(allowed), self.vectors.ntotal)
        depth = max(1, min(depth, available))
        similarities, ids = self.vectors.search(embedding[None], depth, allowed)
        valid = ids[0] >= 0
        return Ranking(ids[0][valid], {"similarity": similarities[0][valid]}, exhausted=int(valid.sum()) < depth or depth >= available)

    def _hybrid_ranking(self, embedding: np.ndarray, expression: str | None, depth: int, allowed, deadline) -> Ranking:
        vector = self._vector_ranking(embedding, depth, allowed)
        vector_ids, similarities = vector.ids, vector.scores["similarity"]
        keyword_scores, keyword_ids = (self.keywords.search(expression, depth, allowed, deadline) if expression is not None
                                       else (np.zeros(0), np.zeros(0, np.int64)))
        ids, fused = reciprocal_rank_fusion([vector_ids, keyword_ids])
        return Ranking(ids, {"fused_score": fused, "similarity": _scores_of(ids, vector_ids, similarities),
                             "keyword_score": _scores_of(ids, keyword_ids, keyword_scores)},
                       exhausted=vector.exhausted and len(keyword_ids) < depth)

    def search_object(self, object_id: int, k: int = 10, **options) -> list[Hit]:
        """Objects most similar to an indexed object (the object itself is left out)."""
        return self.search_embedding(self._object_embedding(object_id), k, exclude=(int(object_id),), **options)

    def _object_embedding(self, object_id: int) -> np.ndarray:
        embedding = self.vectors.reconstruct(int(object_id))
        if embedding is None:
            raise NotFound(f"no object with id {object_id} in this index")
        return embedding

    def search_region(self, image_path: str | os.PathLike, box_xyxy: Sequence[float] | None = None, k: int = 10, **options) -> list[Hit]:
        """Objects most similar to a region (pixels, xyxy) of an image file; no box = the whole image."""
        from objsearch.image_decode import decode_image

        return self.search_pixels(decode_image(image_path), box_xyxy, k, **options)

    def search_pixels(self, decoded: DecodedImage, box_xyxy: Sequence[float] | None = None, k: int = 10, **options) -> list[Hit]:
        """Objects most similar to a region (pixels of the original image, xyxy) of a decoded image
        (``objsearch.image_decode``); no box = the whole image."""
        return self.search_embedding(self._region_embedding(decoded, box_xyxy), k, **options)

    def _region_embedding(self, decoded: DecodedImage, box_xyxy: Sequence[float] | None) -> np.ndarray:
        box = np.asarray(box_xyxy if box_xyxy is not None else (0, 0, decoded.width, decoded.height), dtype=np.float32)
        if box.shape != (4,) or not np.all(np.isfinite(box)):
            raise BadQuery("a box is four finite numbers: x1, y1, x2, y2 (pixels)")
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= decoded.width and 0 <= y1 < y2 <= decoded.height):
            raise BadQuery(f"box {box.tolist()} is not inside the {decoded.width}x{decoded.height} image with x1 < x2 and y1 < y2")
        return self.embedder.embed_regions(decoded.pixels, box[None] * decoded.scale)[0]

    def search_embedding(
        self,
        embedding: np.ndarray,
        k: int = 10,
        *,
        where: str | None = None,
        min_score: float | None = None,
        per_image: bool = False,
        exclude: Sequence[int] = (),
    ) -> list[Hit]:
        """Top-k objects by inner product with ``embedding`` ((D,) float32, L2-normalised).

        where:     SQL predicate over ``objects_images`` columns; the result is the exact top-k
                   among the objects that satisfy it.
        min_score: drop hits whose similarity is below this.
        per_image: keep only the best object of each image (k images).
        """
        embedding = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if embedding.shape[0] != self.manifest.embedder.embed_dim:
            raise BadQuery(f"query embedding has {embedding.shape[0]} dimensions; this index has {self.manifest.embedder.embed_dim}")
        return self._search_ranked(lambda depth, allowed, deadline: self._vector_ranking(embedding, depth, allowed), k,
                                   first_depth=_wanted(k, exclude, per_image), where=where, per_image=per_image,
                                   exclude=exclude, min_score=min_score)

    def _search_ranked(self, rank: Callable[[int, np.ndarray | None, float | None], Ranking], k: int, *, first_depth: int,
                       where: str | None = None, per_image: bool = False, exclude: Sequence[int] = (),
                       embedding: np.ndarray | None = None, min_score: float | None = None) -> list[Hit]:
        """The first k hits of ``rank(depth, allowed ids, deadline)`` (a vector, keyword or fused
        ranking of at most ``depth`` objects, ``first_depth`` at first), asked for deeper (x4) until
        k survive the row look-up and the exclusion, per-image and similarity rules
        (``_select``) or the ranking runs out. ``embedding``: the query's, to give each hit its
        similarity where the ranking did not."""
        if k < 1:
            raise BadQuery("k must be at least 1")
        deadline = self.catalog.deadline()  # one time limit for the filter, every round and its row look-ups
        allowed = self.catalog.filter_object_ids(where, deadline) if where else None
        depth = first_depth
        started = time.perf_counter()
        while True:
            ranking = rank(depth, allowed, deadline)
            hits = self._select(ranking, k, per_image, set(exclude), deadline, min_score)
            similarities = ranking.scores.get("similarity")
            below_min = min_score is not None and similarities is not None and len(similarities) and similarities[-1] < min_score
            if len(hits) >= k or ranking.exhausted or below_min:
                break
            self.catalog.check_deadline(deadline)
            depth *= 4
        if embedding is not None:
            hits = [h if h.similarity is not None else dataclasses.replace(h, similarity=self._similarity(embedding, h.object_id))
                    for h in hits]
        logger.debug("search took %.1f ms", (time.perf_counter() - started) * 1e3)
        return hits

    def _similarity(self, embedding: np.ndarray, object_id: int) -> float | None:
        vector = self.vectors.reconstruct(object_id)
        return None if vector is None else float(np.dot(vector, embedding))

    def _select(self, ranking: Ranking, k: int, per_image: bool, exclude: set[int], deadline,
                min_similarity: float | None = None) -> list[Hit]:
        """The first k objects of ``ranking`` that still have a row (a hit each), leaving out
        ``exclude``, later objects of an image already shown when ``per_image``, and everything
        from the first similarity below ``min_similarity`` on. Rows are read for a prefix of the
        ranking at a time (2k ids, then twice as many), not for all of a deep one."""
        hits: list[Hit] = []
        seen_images: set[int] = set()
        rows: dict[int, dict] = {}
        read = 0
        for position, object_id in enumerate(ranking.ids.tolist()):
            if position == read:
                read = min(len(ranking.ids), max(2 * k, 2 * read, 64))
                rows.update(self.catalog.rows_for_objects(ranking.ids[position:read], deadline))
            row = rows.get(object_id)
            if row is None or object_id in exclude:
                continue
            scores = ranking.scores_at(position)
            if min_similarity is not None and scores["similarity"] < min_similarity:
                break
            if per_image and row["image_id"] in seen_images:
                continue
            seen_images.add(row["image_id"])
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    object_id=object_id,
                    image_id=int(row["image_id"]),
                    path=row["path"],
                    box_xyxy=(float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"])),
                    similarity=scores.get("similarity"),
                    det_score=float(row["score"]),
                    label=row["label"],
                    caption=row["caption"],
                    image_width=row["width"],
                    image_height=row["height"],
                    keyword_score=scores.get("keyword_score"),
                    fused_score=scores.get("fused_score"),
                )
            )
            if len(hits) == k:
                break
        return hits

    # -- metadata ----------------------------------------------------------------------------------
    def object(self, object_id: int) -> dict:
        """One live object's hit columns and its image's path and size; NotFound when not held."""
        row = self.catalog.rows_for_objects(np.array([int(object_id)], np.int64)).get(int(object_id))
        if row is None:
            raise NotFound(f"no object with id {object_id} in this index")
        return row

    def masks(self, object_ids: Sequence[int]) -> dict[int, dict]:
        """object_id -> COCO RLE mask, for those of ``object_ids`` that have one (``size`` is the
        [H, W] of the image the model saw, which may be the original scaled down)."""
        return self.catalog.masks_of(object_ids)

    def image(self, image_id: int, *, with_objects: bool = True) -> dict:
        """One image's row, with its live objects under ``objects`` (each without its embedding)
        unless ``with_objects`` is false; NotFound when not held."""
        row = self.catalog.image_row(image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id} in this index")
        return {**row, "objects": self.catalog.objects_of_image(image_id)} if with_objects else row

    def info(self) -> dict:
        """Counts, model, index type and size on disk (what ``objsearch info`` shows)."""
        from objsearch.store.manifest import index_size_bytes

        m = self.manifest
        size = index_size_bytes(self.root)
        return {
            "index": str(self.root.resolve()),
            "format_version": m.format_version,
            "generation": m.generation,
            "model": {"name": m.embedder.name, "version": m.embedder.version, "embed_dim": m.embedder.embed_dim},
            "index_type": m.index_type,
            "segments": len(m.segments),
            "deleted_objects_on_disk": m.tombstone_count,
            **m.counts,
            "size_bytes": size,
            "bytes_per_object": round(size / m.counts["objects"], 1) if m.counts["objects"] else None,
        }

    def sql(self, statement: str) -> tuple[list[str], list[tuple]]:
        """One read-only SQL statement over the ``images``, ``objects`` and ``objects_images`` views."""
        return self.catalog.sql(statement)

    def errors(self) -> list[tuple[str, str]]:
        """(path, error) of every file that could not be indexed."""
        return self.catalog.sql("SELECT path, error FROM images WHERE status = 'error' ORDER BY path")[1]

    def close(self) -> None:
        self.catalog.close()
        if self._keywords is not None:
            self._keywords.close()
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_text(query: str) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in query).strip()
    if not cleaned:
        raise BadQuery("the query text is empty")
    if len(cleaned) > MAX_QUERY_CHARS:
        raise BadQuery(f"the query text is {len(cleaned)} characters long; the limit is {MAX_QUERY_CHARS}")
    return cleaned


def open_index(path: str | os.PathLike | None = None, *, model: ObjectEmbedder | str | None = None, retries: int = 3,
               time_limit_s: float | None = DEFAULT_TIME_LIMIT_S, previous: Index | None = None) -> Index:
    """Open the committed state of the index at ``path`` (default: $OBJSEARCH_INDEX or ./.objsearch).

    ``model`` (an embedder or a --model string) must be the one that built the index; by default
    the recorded one is loaded when a query first needs it. ``time_limit_s``: see ``Index``.
    ``previous``: an open, older generation of the same index (a server following commits): what
    it already loaded and this generation keeps (segments, opened shards) is taken over.
    """
    root = resolve_index_path(path)
    for attempt in range(retries):
        manifest, lease = leased_manifest(root)
        damaged = missing_or_resized(root, manifest)
        if not damaged:
            try:
                return Index(root, manifest, model, time_limit_s, lease, previous=previous)
            except BaseException:
                if lease is not None:
                    lease.release()
                raise
        if lease is not None:
            lease.release()
        # Perhaps a writer replaced the manifest while we read it: look again before giving up.
        logger.debug("index files missing or resized while opening (attempt %d): %s", attempt + 1, damaged[:3])
        time.sleep(0.05)
    raise IndexCorrupt(f"index at {root}: files missing or damaged: {', '.join(damaged[:5])}; run `objsearch doctor --repair`")
