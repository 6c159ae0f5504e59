"""Keyword (SQLite FTS5) and hybrid search: what a user finds with each mode, and the keyword files'
life in the store (written by the same commit as their segment, merged, collected, checked and
repaired by the doctor, added to an index of the previous format)."""

from __future__ import annotations

import json
import re
import sqlite3
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.cli import app
from objsearch.datasets.blob_embedder import build as build_blobs
from objsearch.datasets.scenes import make_dataset
from objsearch.datasets.synthetic import SyntheticConfig, generate
from objsearch.datasets.synthetic_oracle import SyntheticOracle
from objsearch.errors import BadQuery, QueryTimeout
from objsearch.fusion import reciprocal_rank_fusion
from objsearch.store import keywords
from objsearch.store.commit import IndexWriter
from objsearch.store.doctor import check_index, repair_index
from objsearch.store.layout import KEYWORDS_DIR, FileEntry
from objsearch.store.manifest import NO_KEYWORDS_FORMAT, EmbedderInfo, Manifest, Segment, read_manifest
from tests.conftest import BLOBS


# -- the synthetic shapes, with an exact embedder ------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A small synthetic set indexed with the oracle embedder: (oracle, index root, annotations by caption)."""
    folder = tmp_path_factory.mktemp("shapes")
    generate(folder / "set", SyntheticConfig(num_train=1, num_val=1, num_test=120, seed=4))
    oracle = SyntheticOracle(folder / "set")
    index_folders([folder / "set" / "images" / "test"], folder / "idx", embedder=oracle, options=IndexOptions(progress=False, workers=1))
    return oracle, folder / "idx"


def _shape_colour(hit):
    """(shape, colour) of a hit on the synthetic set, from its caption ("a small red star")."""
    *_, colour, shape = hit.caption.split()
    return shape, colour


def test_star_minus_red_returns_stars_that_are_not_red(shapes):
    oracle, root = shapes
    with open_index(root, model=oracle) as index:
        everything = [_shape_colour(h) for h in index.search("star", 1000)]
        assert ("star", "red") in everything and sum(s == "star" and c != "red" for s, c in everything) >= 5
        for mode in ("vector", "keyword", "hybrid"):
            top = [_shape_colour(h) for h in index.search("star - red", 5, mode=mode)]
            assert len(top) == 5 and all(shape == "star" and colour != "red" for shape, colour in top), (mode, top)
        # and without the minus, red stars are among the best: the minus is what removed them
        assert ("star", "red") in [_shape_colour(h) for h in index.search("star + red", 5)]
        # a keyword search is exact: every star that is not red, and nothing else
        found = [_shape_colour(h) for h in index.search("star - red", 1000, mode="keyword")]
        assert sorted(found) == sorted((s, c) for s, c in everything if s == "star" and c != "red")


def test_keyword_search_finds_the_words_of_captions_and_labels(shapes):
    oracle, root = shapes
    with open_index(root, model=oracle) as index:
        hourglasses = index.search("hourglasses", 1000, mode="keyword")  # stemmed: "hourglasses" finds "hourglass"
        stored = index.sql("SELECT count(*) FROM objects WHERE label = 'hourglass'")[1][0][0]
        assert stored >= 1 and len(hourglasses) == stored and all(h.label == "hourglass" for h in hourglasses)
        assert all(h.similarity is None and h.keyword_score > 0 and h.fused_score is None for h in hourglasses)
        # any word matches; the objects matching both come first
        ranked = index.search("small circle", 1000, mode="keyword")
        both = [position for position, h in enumerate(ranked) if "small" in h.caption and h.label == "circle"]
        assert both and len(ranked) > len(both) and max(both) == len(both) - 1, [h.caption for h in ranked[:10]]


def test_hybrid_hits_carry_both_scores_and_are_ranked_by_the_fused_one(shapes):
    oracle, root = shapes
    with open_index(root, model=oracle) as index:
        hits = index.search("red star", 20, mode="hybrid")
        assert [h.fused_score for h in hits] == sorted((h.fused_score for h in hits), reverse=True)
        assert all(h.similarity is not None for h in hits)
        assert _shape_colour(hits[0]) == ("star", "red")


# -- real photos: a rare word the embedding blurs ---------------------------------------------------------
def test_a_keyword_search_finds_a_rare_caption_word_that_vector_search_ranks_low(bundled_index, bundled_embedder):
    """The bundled captions carry the ImageNet classifier's name for each object in parentheses; of
    the names only one caption has, the one vector search ranks worst is found first by keyword and
    hybrid search."""
    with open_index(bundled_index, model=bundled_embedder) as index:
        worst = None
        captions = index.sql("SELECT object_id, caption FROM objects")[1]
        for object_id, caption in captions:
            named = re.search(r"\((.+)\)", caption)
            word = named and named.group(1)
            if not word or sum(word in other for _, other in captions) > 1:
                continue  # no classifier's name, or not a rare one: another caption has it too
            ranked = [h.object_id for h in index.search(word, 1000)]
            rank = ranked.index(object_id) + 1 if object_id in ranked else len(ranked) + 1
            if worst is None or rank > worst[0]:
                worst = (rank, word, object_id)
        rank, word, object_id = worst
        assert rank > 1, worst  # the premise: vector search alone does not rank it first
        for mode in ("keyword", "hybrid"):
            assert index.search(word, 1, mode=mode)[0].object_id == object_id, (mode, word)


# -- the query's words -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['"', "*", "NEAR(red box)", "label:red", "red AND", "^red", "(red", "red OR -box", "café"])
def test_nothing_a_user_types_is_read_as_fts5_syntax(tmp_path, text):
    root = _blob_index(tmp_path, 4)
    with open_index(root, model=build_blobs()) as index:
        try:
            hits = index.search(text, 5, mode="keyword")
        except BadQuery as exc:  # never an FTS5 syntax error
            assert "needs at least one word" in str(exc), exc
        else:
            words = keywords.query_words(text.replace("-", " "))
            assert all(any(w in h.caption for w in words) for h in hits), (text, hits)


def test_the_query_words_drop_stop_words_unless_nothing_else_is_left():
    assert keywords.query_words("The red star, left of a RED circle") == ["red", "star", "left", "circle"]
    assert keywords.query_words("the a") == ["the", "a"]
    assert keywords.match_expression(["red"], ['say "hi"']) == '("red") NOT ("say ""hi""")'


def test_reciprocal_rank_fusion_adds_one_over_k_plus_rank():
    ids, scores = reciprocal_rank_fusion([np.array([7, 3, 5]), np.array([5, 9, -1])], k=60)
    assert ids.tolist() == [5, 7, 3, 9]
    assert scores.tolist() == pytest.approx([1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])  # 3 and 9 tie, both 2nd: id order


# -- modes, filters and errors -----------------------------------------------------------------------------
def _blob_index(tmp_path, count, seed=0, **options):
    make_dataset(tmp_path / "imgs", count, seed=seed)
    index_folders([tmp_path / "imgs"], tmp_path / "idx", model=BLOBS, options=IndexOptions(progress=False, workers=1, **options))
    return tmp_path / "idx"


def test_keyword_and_hybrid_search_honour_where_per_image_and_removed_images(tmp_path):
    root = _blob_index(tmp_path, 12, commit_every=4)
    with open_index(root, model=build_blobs()) as index:
        red = index.search("red", 1000, mode="keyword")
        assert red and all("red" in h.caption for h in red)
        assert len(red) == index.sql("SELECT count(*) FROM objects WHERE caption LIKE '%red%'")[1][0][0]
        some_image = red[0].image_id
        for mode in ("keyword", "hybrid"):
            filtered = index.search("red", 1000, mode=mode, where=f"image_id <> {some_image}")
            assert filtered and some_image not in {h.image_id for h in filtered}
            one_each = index.search("red", 1000, mode=mode, per_image=True)
            assert len({h.image_id for h in one_each}) == len(one_each)
    removed = red[0].path
    (tmp_path / "imgs" / removed.rsplit("/", 1)[-1]).unlink()
    index_folders([tmp_path / "imgs"], root, model=BLOBS, options=IndexOptions(progress=False, workers=1))
    assert read_manifest(root).tombstone_count > 0  # the removal is a tombstone, the keyword file unchanged
    with open_index(root, model=build_blobs()) as index:
        for mode in ("keyword", "hybrid"):
            assert removed not in {h.path for h in index.search("red", 1000, mode=mode)}
        _, ids = index.keywords.search('"red"', 1000)
        assert len(ids) and not set(ids.tolist()) & set(index.vectors.tombstones.tolist())  # k live ids, not k minus the deleted


@pytest.mark.parametrize("call, words", [
    (lambda index: index.search("red", 5, mode="fuzzy"), "unknown search mode"),
    (lambda index: index.search("red", 5, mode="keyword", min_score=0.5), "vector search only"),
    (lambda index: index.search("red + @0", 5, mode="keyword"), "needs the vector or hybrid mode"),
    (lambda index: index.search("!!", 5, mode="keyword"), "at least one word"),
    (lambda index: index.search(" ".join(f"w{i}" for i in range(100)), 5, mode="keyword"), "at most 64 words"),
])
def test_a_wrong_mode_or_option_is_a_one_line_error(tmp_path, call, words):
    root = _blob_index(tmp_path, 2)
    with open_index(root, model=build_blobs()) as index, pytest.raises(BadQuery) as caught:
        call(index)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_keyword_search_past_its_deadline_stops(tmp_path):
    path = tmp_path / "k.sqlite"
    n = 50_000
    keywords.write_keywords(path, np.arange(n), ["box"] * n, [f"a red box number {i}" for i in range(n)])
    unused = FileEntry("unused", 0, "")
    segment = Segment(unused, unused, "", n, 0, n - 1, keywords=FileEntry("k.sqlite", 0, ""))
    manifest = Manifest(EmbedderInfo("test", "1", 4), segments=[segment])
    searcher = keywords.KeywordSet(tmp_path, manifest, np.zeros(0, np.int64))
    assert len(searcher.search('"red"', 10)[1]) == 10
    with pytest.raises(QueryTimeout):
        searcher.search('"red"', 10, deadline=time.monotonic() + 0.001)
    searcher.close()


# -- the CLI and its output ---------------------------------------------------------------------------------
def test_the_cli_mode_option(tmp_path):
    root = _blob_index(tmp_path, 4)
    runner = CliRunner()
    keyword = runner.invoke(app, ["query", "red", "--mode", "keyword", "--index", str(root), "--format", "json"])
    assert keyword.exit_code == 0, keyword.output
    hits = json.loads(keyword.output)
    assert hits and all(h["similarity"] is None and h["keyword_score"] > 0 and "red" in h["caption"] for h in hits)
    table = runner.invoke(app, ["query", "red", "--mode", "hybrid", "--index", str(root)])
    assert table.exit_code == 0 and "red" in table.output
    csv = runner.invoke(app, ["query", "red", "--mode", "keyword", "--index", str(root), "--format", "csv"])
    header, first = csv.output.splitlines()[:2]
    assert header.endswith("keyword_score,fused_score") and first.split(",")[1] == ""
    for args, words in ((["--mode", "fuzzy"], "unknown search mode"), (["--mode", "keyword", "--min-score", "0.3"], "vector search only")):
        bad = runner.invoke(app, ["query", "red", *args, "--index", str(root)])
        assert bad.exit_code != 0 and words in bad.output and "Traceback" not in bad.output, bad.output
    bad = runner.invoke(app, ["query", "--object", "0", "--mode", "keyword", "--index", str(root)])
    assert bad.exit_code != 0 and "needs a TEXT query" in bad.output


# -- the keyword files in the store --------------------------------------------------------------------------
def _keyword_files(root):
    return {p.relative_to(root).as_posix() for p in (root / KEYWORDS_DIR).glob("*.sqlite")}


def test_every_segment_has_its_keywords_file_through_commits_merges_and_garbage_collection(tmp_path):
    root = _blob_index(tmp_path, 40, commit_every=2)  # 20 commits: segments merged along the way
    manifest = read_manifest(root)
    assert all(s.keywords is not None for s in manifest.segments)
    assert _keyword_files(root) == {s.keywords.path for s in manifest.segments}  # merged-away ones collected
    for segment in manifest.segments:
        assert keywords.stored_ids(root / segment.keywords.path).tolist() == list(range(segment.min_object_id, segment.max_object_id + 1))
    with open_index(root, model=build_blobs()) as index:
        found = index.search("red", 1000, mode="keyword")
        assert len(found) == index.sql("SELECT count(*) FROM objects WHERE caption LIKE '%red%'")[1][0][0]


def test_the_doctor_finds_and_rebuilds_a_damaged_keywords_file(tmp_path):
    root = _blob_index(tmp_path, 6)
    with open_index(root, model=build_blobs()) as index:
        expected = [h.object_id for h in index.search("blue", 100, mode="keyword")]
    damaged = root / read_manifest(root).segments[0].keywords.path
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert [p.path for p in check_index(root)] == [damaged.relative_to(root).as_posix()]
    report = repair_index(root)
    assert not report.remaining and any("rebuilt keywords/" in r for r in report.repairs)
    with open_index(root, model=build_blobs()) as index:
        assert [h.object_id for h in index.search("blue", 100, mode="keyword")] == expected


def test_the_doctor_finds_a_keywords_file_that_holds_another_segments_objects(tmp_path):
    root = _blob_index(tmp_path, 6, commit_every=2)
    data = json.loads((root / "manifest.json").read_text())
    first, second = data["segments"][:2]
    first["keywords"], second["keywords"] = second["keywords"], first["keywords"]  # sound files, swapped
    (root / "manifest.json").write_text(json.dumps(data))
    problems = check_index(root)
    assert len(problems) == 2 and all("its rows are not those of" in p.what for p in problems)
    report = repair_index(root)
    assert not report.remaining and sum("rebuilt keywords/" in r for r in report.repairs) == 2


def test_an_index_of_the_previous_format_is_searched_by_vector_and_upgraded_by_its_next_writer(tmp_path):
    root = _blob_index(tmp_path, 6)
    data = json.loads((root / "manifest.json").read_text())
    data["format_version"] = NO_KEYWORDS_FORMAT
    for segment in data["segments"]:
        (root / segment.pop("keywords")["path"]).unlink()
    (root / "manifest.json").write_text(json.dumps(data))
    with open_index(root, model=build_blobs()) as index:
        assert index.search("red", 3)  # vector search works as before
        with pytest.raises(BadQuery, match="no keyword index yet"):
            index.search("red", 3, mode="keyword")
    assert not check_index(root)  # a sound index of that format
    IndexWriter(root, read_manifest(root).embedder).close()  # any writer (an index or compact run) upgrades it
    manifest = read_manifest(root)
    assert manifest.format_version == 3 and all(s.keywords is not None for s in manifest.segments)
    with open_index(root, model=build_blobs()) as index:
        assert index.search("red", 3, mode="keyword")
    assert not check_index(root)


def test_the_best_keyword_hits_are_the_best_by_the_weighted_score(tmp_path):
    """Each segment's LIMIT keeps the best by the score that ranks them (label words weighted),
    not by FTS5's default unweighted bm25."""
    n = 2000
    rng = np.random.default_rng(0)
    labels = ["dog" if rng.random() < 0.3 else "cat" for _ in range(n)]
    captions = [" ".join(["a"] + ["dog"] * int(rng.integers(0, 3)) + ["thing"] * int(rng.integers(1, 8))) for _ in range(n)]
    keywords.write_keywords(tmp_path / "k.sqlite", np.arange(n), labels, captions)
    unused = FileEntry("unused", 0, "")
    manifest = Manifest(EmbedderInfo("test", "1", 4), segments=[Segment(unused, unused, "", n, 0, n - 1, keywords=FileEntry("k.sqlite", 0, ""))])
    searcher = keywords.KeywordSet(tmp_path, manifest, np.zeros(0, np.int64))
    best = searcher.search('"dog"', 10)
    searcher.close()
    con = sqlite3.connect(tmp_path / "k.sqlite")
    weighted = con.execute(f"SELECT rowid, bm25(terms, {keywords.LABEL_WEIGHT}, 1.0) AS s FROM terms WHERE terms MATCH '\"dog\"' "
                           "ORDER BY s, rowid LIMIT 10").fetchall()
    con.close()
    assert best[1].tolist() == [row[0] for row in weighted]
    assert best[0] == pytest.approx([-row[1] for row in weighted])


class _RandomTexts:
    """Embeds every text as one fixed random unit vector: a vector ranking unrelated to the words."""

    name, version, embed_dim = "random-texts", "1", 16

    def embed_texts(self, texts):
        vector = np.random.default_rng(1).standard_normal(self.embed_dim).astype(np.float32)
        return np.tile(vector / np.linalg.norm(vector), (len(texts), 1))


def test_a_hybrid_ranking_does_not_depend_on_how_many_hits_are_asked_for(tmp_path):
    """Pages are cut from one ranking: the first k of 400 hits are the hits of a k search, where the
    vector and keyword rankings disagree (random embeddings, random caption words)."""
    from objsearch.embedders.base import Detections
    from objsearch.store.commit import ImageRecord
    from objsearch.store.manifest import EmbedderInfo as Info

    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "box", "ball", "cup"]
    root = tmp_path / "idx"
    with IndexWriter(root, Info("random-texts", "1", 16)) as writer:
        for image in range(300):
            vectors = rng.standard_normal((2, 16)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            captions = [" ".join(rng.choice(words, 3)) for _ in range(2)]
            writer.add_image(ImageRecord(f"/p/{image}.jpg", 1, image, f"{image:032x}", 100, 100),
                             Detections(np.tile([0, 0, 10, 10], (2, 1)), np.ones(2), ["thing"] * 2, vectors, captions=captions))
        writer.commit()
    with open_index(root, model=_RandomTexts()) as index:
        deep = [h.object_id for h in index.search("red ball", 400, mode="hybrid")]
        for k in (5, 30, 150):
            assert [h.object_id for h in index.search("red ball", k, mode="hybrid")] == deep[:k], k
