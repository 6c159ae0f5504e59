"""Composed queries: the language (weights, + and -, objects, regions), how terms combine, and what
a user sees in the ranking."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.pipeline import IndexOptions, index_folders
from objsearch import open_index
from objsearch.datasets.blob_embedder import build as build_blobs
from objsearch.datasets.scenes import make_dataset
from objsearch.errors import BadQuery
from objsearch.query import Query, Term, combine
from tests.conftest import BLOBS


def test_terms_weights_and_signs_are_parsed():
    query = Query.parse("2:golden retriever + @1234 - 0.5:@photos/my pool.jpg[10,20,200.5,300] - grass")
    assert query.terms == (
        Term(2.0, text="golden retriever"),
        Term(1.0, object_id=1234),
        Term(-0.5, image="photos/my pool.jpg", box=(10.0, 20.0, 200.5, 300.0)),
        Term(-1.0, text="grass"),
    )
    assert Query.parse(str(query)) == query
    assert Query.parse("t-shirt + e-bike").terms == (Term(text="t-shirt"), Term(text="e-bike"))  # '-' inside a word
    assert Query.parse("- grass + dog").terms == (Term(-1.0, text="grass"), Term(text="dog"))
    assert Query.parse("@photo.jpg").terms == (Term(image="photo.jpg"),)
    assert Query.parse("1e2:dog").terms == (Term(100.0, text="dog"),)
    small = Query.text("dog", weight=1e-3)
    assert Query.parse(str(small)) == small


def test_the_builder_makes_what_the_parser_makes():
    built = Query.text("dog", weight=2) + Query.object(5) - Query.region("a.jpg", (0, 0, 10, 10)) - Query.text("cat")
    assert built == Query.parse("2:dog + @5 - @a.jpg[0,0,10,10] - cat")


@pytest.mark.parametrize("text, where, words", [
    ("dog + ", 5, "empty term"),
    ("dog + + cat", 5, "empty term"),
    ("0:dog", 1, "positive number"),
    ("-2:dog", 1, "positive number"),
    ("dog + 3:", 9, "needs a term"),
    ("@photo.jpg[1,2,x,4]", 12, "four numbers"),
    ("@[1,2,3,4]", 2, "object id or an image path"),
    ("- grass", None, "at least one positive term"),
    ("2e9:dog", 1, "between 0.001 and 1000"),
    ("@99999999999999999999999", 2, "so large an id"),
    ("", None, "empty"),
])
def test_a_bad_query_says_where_and_why_in_one_line(text, where, words):
    with pytest.raises(BadQuery) as caught:
        Query.parse(text)
    message = str(caught.value)
    assert words in message and "\n" not in message
    if where is not None:
        assert f"at character {where} " in message


def test_terms_combine_as_a_weighted_sum_of_unit_embeddings():
    red, blue = np.eye(2, dtype=np.float32)
    combined = combine(np.stack([red, blue]), np.array([2.0, -1.0]))
    np.testing.assert_allclose(combined, np.array([2, -1]) / np.sqrt(5), rtol=1e-6)
    with pytest.raises(BadQuery, match="cancel"):
        combine(np.stack([red, red]), np.array([1.0, -1.0]))


@pytest.fixture(scope="module")
def blob_index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    make_dataset(folder, 40)
    root = tmp_path_factory.mktemp("index")
    index_folders([folder], root, embedder=build_blobs(), model=BLOBS, options=IndexOptions(progress=False, workers=1))
    with open_index(root, model=build_blobs()) as index:
        yield index


def colours(hits) -> list[str]:
    return [hit.label.split()[0] for hit in hits]


def test_a_weight_moves_the_ranking_toward_its_term(blob_index):
    assert set(colours(blob_index.search("red + 2:blue", k=10))) == {"blue"}
    assert set(colours(blob_index.search("2:red + blue", k=10))) == {"red"}
    both = colours(blob_index.search("red + blue", k=40))
    assert set(both[:20]) <= {"red", "blue"} and {"red", "blue"} <= set(both)


def test_a_negative_term_pushes_its_objects_away(blob_index):
    """The blob embedder's analogue of "star - red": an object's embedding is its colour plus its
    shape (how wide it is), so "this red object - red" asks for its shape in other colours."""
    red = blob_index.search("red", k=1)[0]
    alike = blob_index.search(f"@{red.object_id}", k=5)
    assert colours(alike) == ["red"] * 5
    shaped = blob_index.search(f"@{red.object_id} - red", k=5)
    assert "red" not in colours(shaped) and len(shaped) == 5
    width = lambda hit: (hit.box_xyxy[2] - hit.box_xyxy[0]) / (hit.box_xyxy[2] - hit.box_xyxy[0] + hit.box_xyxy[3] - hit.box_xyxy[1])  # noqa: E731
    mean_other = np.mean([width(h) for h in blob_index.search("green + blue + yellow + purple", k=60)])
    assert abs(np.mean([width(h) for h in shaped]) - width(red)) < abs(mean_other - width(red))
    assert red.object_id not in {hit.object_id for hit in blob_index.search(f"@{red.object_id} + red", k=20)}


def test_a_region_term_reads_the_image_file(blob_index, tmp_path):
    from PIL import Image

    Image.new("RGB", (60, 40), (30, 60, 220)).save(tmp_path / "blue.png")
    assert set(colours(blob_index.search(f"@{tmp_path / 'blue.png'}", k=5))) == {"blue"}
    assert set(colours(blob_index.search(f"@{tmp_path / 'blue.png'}[0,0,30,40] - blue + red", k=5))) == {"red"}
