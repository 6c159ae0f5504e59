"""The HTTP API of `objsearch serve`, through FastAPI's test client: every route, and every bad input
a client could send (a missing or wrong token, path tricks, an oversized or non-image upload, a
hostile `where`, a huge k), each answered with a one-line JSON error while the server keeps going."""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from objsearch.datasets.scenes import make_dataset
from objsearch.serve import app as serve_app
from objsearch.serve.app import API, create_app
from tests.conftest import BLOBS

TOKEN = "s3cret-token"


def index_blobs(images, index, count, seed=0):
    from indexer.pipeline import IndexOptions, index_folders

    make_dataset(images, count, seed=seed)
    index_folders([images], index, model=BLOBS, options=IndexOptions(progress=False, workers=1))


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    index_blobs(root / "imgs", root / "idx", 8)
    return root


@pytest.fixture(scope="module")
def client(blob_root):
    with TestClient(create_app(blob_root / "idx", token=TOKEN)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield test_client


def one_line_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def png_bytes(path):
    image = Image.open(path)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# -- the routes --------------------------------------------------------------------------------------
def test_health_needs_no_token_and_everything_else_does(blob_root, client):
    anonymous = TestClient(client.app)
    assert anonymous.get(f"{API}/health").json()["status"] == "ok"
    for route in ("/info", "/labels", "/search?text=red", "/objects/1", "/objects/1/crop", "/images/1", "/images/1/file", "/openapi.json"):
        assert "token" in one_line_error(anonymous.get(API + route), 401)
        assert "token" in one_line_error(anonymous.get(API + route, headers={"Authorization": "Bearer wrong"}), 401)
        assert "token" in one_line_error(anonymous.get(API + route, headers={"Authorization": TOKEN}), 401)
    assert one_line_error(anonymous.post(f"{API}/search", json={"text": "red"}), 401)
    assert client.get(f"{API}/info").status_code == 200


def test_a_composed_query_works_and_cannot_name_a_server_file(client, blob_root, monkeypatch):
    blue_first = client.get(f"{API}/search", params={"text": "red + 2:blue", "k": 3}).json()["hits"]
    assert [hit["label"] for hit in blue_first] == ["blue box"] * 3
    red = client.get(f"{API}/search", params={"text": "red", "k": 1}).json()["hits"][0]
    shaped = client.post(f"{API}/search", json={"text": f"@{red['object_id']} - red", "k": 3}).json()["hits"]
    assert "red box" not in [hit["label"] for hit in shaped]
    import objsearch.image_decode

    opened = []
    monkeypatch.setattr(objsearch.image_decode, "decode_image", lambda *a, **k: opened.append(a))
    some_file = next((blob_root / "imgs").iterdir())
    assert "'@' names an indexed object id" in one_line_error(client.get(f"{API}/search", params={"text": f"red - @{some_file}"}), 400)
    assert opened == []
    assert "at character" in one_line_error(client.get(f"{API}/search", params={"text": "red + "}), 400)


def test_info_and_labels(client):
    info = client.get(f"{API}/info").json()
    assert info["images"] == 8 and info["objects"] > 8 and info["model"]["name"] == "test-blobs"
    labels = client.get(f"{API}/labels").json()
    assert sum(entry["count"] for entry in labels) == info["objects"]
    assert [entry["count"] for entry in labels] == sorted((entry["count"] for entry in labels), reverse=True)


def test_text_search_gives_hits_with_boxes_sizes_and_working_urls(client):
    response = client.get(f"{API}/search", params={"text": "red", "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["took_ms"] > 0 and body["k"] == 5 and body["offset"] == 0
    hits = body["hits"]
    assert len(hits) == 5 and hits[0]["label"] == "red box"
    for hit in hits:
        x1, y1, x2, y2 = hit["box"]
        assert 0 <= x1 < x2 <= hit["image_width"] and 0 <= y1 < y2 <= hit["image_height"]
    crop = client.get(hits[0]["crop_url"], params={"size": 64})
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(crop.content))
    assert max(picture.size) <= 64
    # the crop shows the object: a red rectangle
    r, g, b = np.asarray(picture.convert("RGB"), np.float32).reshape(-1, 3).mean(axis=0)
    assert r > 150 and g < 110 and b < 110
    whole = Image.open(io.BytesIO(client.get(hits[0]["image_url"]).content))
    assert whole.size == (hits[0]["image_width"], hits[0]["image_height"])
    obj = client.get(hits[0]["object_url"]).json()
    assert obj["object_id"] == hits[0]["object_id"] and obj["box"] == hits[0]["box"]
    image = client.get(f"{API}/images/{hits[0]['image_id']}").json()
    assert hits[0]["object_id"] in [o["object_id"] for o in image["objects"]] and image["width"] == hits[0]["image_width"]


def test_pages_follow_each_other_and_end(client):
    # (the blob embedder scores every object of another colour exactly 0: min_similarity keeps
    # those ties out, whose order FAISS leaves open)
    query = {"text": "red", "min_similarity": 0.5}
    everything = client.get(f"{API}/search", params={**query, "k": 100}).json()
    total = len(everything["hits"])
    assert everything["next_offset"] is None and 4 < total < 100
    pages, offset = [], 0
    while offset is not None:
        page = client.get(f"{API}/search", params={**query, "k": 2, "offset": offset}).json()
        assert len(page["hits"]) == 2 or page["next_offset"] is None
        pages += page["hits"]
        offset = page["next_offset"]
    assert [h["object_id"] for h in pages] == [h["object_id"] for h in everything["hits"]]


def test_search_by_object_leaves_the_object_out(client):
    first = client.get(f"{API}/search", params={"text": "green", "k": 1}).json()["hits"][0]
    similar = client.get(f"{API}/search", params={"object_id": first["object_id"], "k": 5}).json()["hits"]
    assert similar and first["object_id"] not in [h["object_id"] for h in similar] and similar[0]["label"] == "green box"
    assert "no object" in one_line_error(client.get(f"{API}/search", params={"object_id": 10**9}), 404)
    assert "no object" in one_line_error(client.get(f"{API}/objects/{10**9}"), 404)
    assert "no image" in one_line_error(client.get(f"{API}/images/{10**9}"), 404)
    assert "no image" in one_line_error(client.get(f"{API}/images/{10**9}/file"), 404)


def test_filters_where_min_similarity_and_per_image(client):
    hits = client.get(f"{API}/search", params={"text": "red", "k": 50, "where": "label = 'blue box'"}).json()["hits"]
    assert hits and {h["label"] for h in hits} == {"blue box"}
    hits = client.get(f"{API}/search", params={"text": "red", "k": 50, "min_similarity": 0.9}).json()["hits"]
    assert hits and all(h["similarity"] >= 0.9 for h in hits)
    hits = client.get(f"{API}/search", params={"text": "red", "k": 50, "per_image": "true"}).json()["hits"]
    assert len({h["image_id"] for h in hits}) == len(hits)


def test_keyword_and_hybrid_modes(client):
    keyword = client.get(f"{API}/search", params={"text": "red", "mode": "keyword", "k": 50}).json()["hits"]
    assert keyword and all(h["similarity"] is None and h["keyword_score"] > 0 and "red" in h["caption"] for h in keyword)
    hybrid = client.post(f"{API}/search", json={"text": "red", "mode": "hybrid", "k": 5}).json()["hits"]
    assert hybrid and all(h["similarity"] is not None and h["fused_score"] > 0 for h in hybrid)
    assert "mode" in one_line_error(client.get(f"{API}/search", params={"text": "red", "mode": "fuzzy"}), 422)
    assert "needs text" in one_line_error(client.post(f"{API}/search", json={"object_id": 1, "mode": "keyword"}), 422)
    assert "vector search only" in one_line_error(
        client.get(f"{API}/search", params={"text": "red", "mode": "keyword", "min_similarity": 0.5}), 400)


def test_dedup_shows_nearly_identical_objects_once(client):
    every = client.get(f"{API}/search", params={"text": "red", "k": 100}).json()["hits"]
    once = client.get(f"{API}/search", params={"text": "red", "k": 100, "dedup": "true"}).json()["hits"]
    assert 0 < len(once) < len(every)
    kept = {h["object_id"] for h in once}
    assert kept <= {h["object_id"] for h in every}
    # a dropped hit is at least 0.95 similar to a kept one ranked above it (here: the same colour and shape)
    assert [h["object_id"] for h in every if h["object_id"] in kept] == [h["object_id"] for h in once]


def test_export_gives_the_hits_as_a_csv_or_coco_file(client):
    import csv

    shown = client.get(f"{API}/search", params={"text": "red", "k": 7}).json()["hits"]
    response = client.post(f"{API}/export", json={"text": "red", "k": 7, "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="objsearch-results.csv"' == response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["object_id"]) for r in rows] == [h["object_id"] for h in shown]
    coco = client.post(f"{API}/export", json={"text": "red", "k": 7, "format": "coco", "mode": "hybrid"}).json()
    assert len(coco["annotations"]) == 7 and all(a["score"] > 0 for a in coco["annotations"])
    assert "format" in one_line_error(client.post(f"{API}/export", json={"text": "red", "format": "xml"}), 422)
    assert one_line_error(client.post(f"{API}/export", json={"text": "red", "k": 5000}), 422)


def test_upload_a_photo_and_a_box(blob_root, client):
    first = client.get(f"{API}/search", params={"text": "red", "k": 1}).json()["hits"][0]
    data = base64.b64encode(png_bytes(first["path"])).decode()
    body = {"image": data, "box": first["box"], "k": 3}
    hits = client.post(f"{API}/search", json=body).json()["hits"]
    assert hits[0]["object_id"] == first["object_id"] and hits[0]["similarity"] > 0.99
    # a data: URL is taken too, and no box means the whole photo
    assert client.post(f"{API}/search", json={"image": "data:image/png;base64," + data}).status_code == 200


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_uploads_are_refused_with_a_reason(client):
    assert "base64" in one_line_error(client.post(f"{API}/search", json={"image": "not base64!!"}), 400)
    text = base64.b64encode(b"just some text, not a picture").decode()
    assert "not an image" in one_line_error(client.post(f"{API}/search", json={"image": text}), 400)
    tiny = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(tiny, format="PNG")
    tiny_b64 = base64.b64encode(tiny.getvalue()).decode()
    assert "not inside" in one_line_error(client.post(f"{API}/search", json={"image": tiny_b64, "box": [0, 0, 400, 300]}), 400)
    assert "box" in one_line_error(client.post(f"{API}/search", json={"text": "red", "box": [0, 0, 1, 1]}), 422)
    assert "exactly one" in one_line_error(client.post(f"{API}/search", json={"text": "red", "object_id": 1}), 422)
    assert "exactly one" in one_line_error(client.post(f"{API}/search", json={}), 422)
    assert one_line_error(client.post(f"{API}/search", content=b"{not json", headers={"Content-Type": "application/json"}), 422)


def test_an_oversized_body_is_refused_before_it_is_read(client, monkeypatch):
    big = "A" * (serve_app.MAX_BODY_BYTES + 10)
    assert "limit" in one_line_error(client.post(f"{API}/search", json={"image": big}), 413)

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(serve_app.MAX_BODY_BYTES // (1 << 20) + 2):
            yield b"A" * (1 << 20)

    assert "limit" in one_line_error(client.post(f"{API}/search", content=chunks(), headers={"Content-Type": "application/json"}), 413)
    assert client.get(f"{API}/search", params={"text": "red"}).status_code == 200


def test_an_upload_over_the_decoded_limit_is_refused(client, monkeypatch):
    monkeypatch.setattr(serve_app, "MAX_UPLOAD_BYTES", 1000)
    payload = base64.b64encode(b"\x89PNG" + b"0" * 2000).decode()
    assert "limit" in one_line_error(client.post(f"{API}/search", json={"image": payload}), 400)


@pytest.mark.parametrize("where", [
    "label = 'red'; DROP TABLE objects",
    "object_id IN (SELECT object_id FROM objects)",
    "read_parquet('/etc/passwd') IS NOT NULL",
    "label = ",
    "nonexistent_column > 3",
])
def test_hostile_or_broken_where_gets_a_400_and_the_server_goes_on(client, where):
    message = one_line_error(client.get(f"{API}/search", params={"text": "red", "where": where}), 400)
    assert "predicate" in message
    assert client.get(f"{API}/search", params={"text": "red", "k": 1}).status_code == 200


def test_without_the_token_no_body_is_read(client):
    anonymous = TestClient(client.app)
    big = "A" * (serve_app.MAX_BODY_BYTES + 10)
    assert "token" in one_line_error(anonymous.post(f"{API}/search", json={"image": big}), 401)


def test_k_offset_and_sizes_are_bounded(client):
    assert "k" in one_line_error(client.get(f"{API}/search", params={"text": "red", "k": 10**6}), 422)
    assert "k" in one_line_error(client.get(f"{API}/search", params={"text": "red", "k": 0}), 422)
    assert "offset" in one_line_error(client.get(f"{API}/search", params={"text": "red", "offset": 10**9}), 422)
    assert "offset + k" in one_line_error(client.get(f"{API}/search", params={"text": "red", "k": 100, "offset": 950}), 400)
    assert "offset + k" in one_line_error(client.post(f"{API}/search", json={"text": "red", "k": 100, "offset": 950}), 422)
    assert "size" in one_line_error(client.get(f"{API}/objects/1/crop", params={"size": 100_000}), 422)
    assert "object_id" in one_line_error(client.get(f"{API}/objects/abc"), 422)
    assert "empty" in one_line_error(client.get(f"{API}/search", params={"text": "   "}), 400)
    assert "text" in one_line_error(client.get(f"{API}/search", params={"text": "x" * 20_000}), 422)
    assert "text" in one_line_error(client.post(f"{API}/search", json={"text": "x" * 20_000}), 422)
    for route in (f"/objects/{2**70}", f"/objects/{2**70}/crop", f"/images/{2**70}", f"/images/{2**70}/file", "/objects/-1"):
        assert one_line_error(client.get(API + route), 422)
    assert "object_id" in one_line_error(client.get(f"{API}/search", params={"object_id": 2**70}), 422)
    assert "exactly one" in one_line_error(client.get(f"{API}/search"), 400)


@pytest.mark.parametrize("path", [
    "/api/v1/images/../../../../etc/passwd",
    "/api/v1/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
    "/static/../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/serve/app.py",
    "/api/v1/images/1/file/../../../etc/passwd",
    "/etc/passwd",
])
def test_no_path_from_a_request_reaches_a_file(client, path):
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code)
    assert "root:" not in response.text and "import" not in response.text


def test_the_schema_lists_every_route_and_no_page_loads_from_outside(client):
    paths = client.get(f"{API}/openapi.json").json()["paths"]
    for route in ("/health", "/info", "/labels", "/search", "/objects/{object_id}", "/objects/{object_id}/crop",
                  "/images/{image_id}", "/images/{image_id}/file"):
        assert API + route in paths
    assert set(paths[f"{API}/search"]) == {"get", "post"}
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "objsearch" in page.text
    for asset in ("/", "/static/app.js", "/static/style.css"):
        text = client.get(asset).text.replace('"http://www.w3.org/2000/svg"', "")  # a namespace name, not a load
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset


def test_no_cors_header_unless_asked(blob_root):
    origin = {"Origin": "https://elsewhere.example"}
    with TestClient(create_app(blob_root / "idx")) as plain:
        assert "access-control-allow-origin" not in plain.get(f"{API}/health", headers=origin).headers
    with TestClient(create_app(blob_root / "idx", cors_origins=["https://elsewhere.example"])) as allowed:
        assert allowed.get(f"{API}/health", headers=origin).headers["access-control-allow-origin"] == "https://elsewhere.example"


# -- a live index ------------------------------------------------------------------------------------
def test_new_commits_are_served_without_a_restart(tmp_path, blob_root):
    shutil.copytree(blob_root / "idx", tmp_path / "idx")
    with TestClient(create_app(tmp_path / "idx")) as client:
        before = client.get(f"{API}/info").json()
        index_blobs(tmp_path / "more", tmp_path / "idx", 4, seed=7)
        after = client.get(f"{API}/info").json()
        assert after["generation"] > before["generation"] and after["images"] == before["images"] + 4
        hits = client.get(f"{API}/search", params={"text": "red", "k": 100}).json()["hits"]
        assert any("/more/" in h["path"] for h in hits)
        assert client.get(f"{API}/health").json()["generation"] == after["generation"]


def test_a_generation_that_cannot_be_opened_leaves_the_old_one_served(tmp_path, blob_root, monkeypatch):
    from objsearch.errors import IndexCorrupt
    from objsearch.serve.live import LiveIndex

    shutil.copytree(blob_root / "idx", tmp_path / "idx")
    with TestClient(create_app(tmp_path / "idx")) as client:
        before = client.get(f"{API}/info").json()["generation"]

        def broken(self):
            raise IndexCorrupt("files missing (as if half-copied)")

        monkeypatch.setattr(LiveIndex, "_open", broken)
        index_blobs(tmp_path / "more", tmp_path / "idx", 2, seed=3)
        assert client.get(f"{API}/search", params={"text": "red"}).status_code == 200
        assert client.get(f"{API}/info").json()["generation"] == before
        monkeypatch.undo()
        assert client.get(f"{API}/info").json()["generation"] > before


def test_a_damaged_index_starts_the_server_and_says_why(tmp_path, blob_root):
    shutil.copytree(blob_root / "idx", tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with TestClient(create_app(tmp_path / "idx")) as client:
        assert client.get(f"{API}/health").status_code == 200
        message = one_line_error(client.get(f"{API}/search", params={"text": "red"}), 503)
        assert "manifest" in message


def test_a_missing_index_is_a_503_until_one_appears(tmp_path, blob_root):
    with TestClient(create_app(tmp_path / "idx")) as client:
        assert client.get(f"{API}/health").json() == {"status": "ok", "generation": None}
        assert "objsearch index" in one_line_error(client.get(f"{API}/search", params={"text": "red"}), 503)
        shutil.copytree(blob_root / "idx", tmp_path / "idx")
        assert client.get(f"{API}/search", params={"text": "red"}).status_code == 200


def test_an_unreadable_photo_is_a_404_not_a_crash(client):
    hit = client.get(f"{API}/search", params={"text": "red", "k": 1}).json()["hits"][0]
    saved = open(hit["path"], "rb").read()
    try:
        with open(hit["path"], "wb") as f:
            f.write(b"garbage")
        assert "cannot be shown" in one_line_error(client.get(hit["crop_url"]), 404)
        assert "cannot be shown" in one_line_error(client.get(hit["image_url"]), 404)
    finally:
        with open(hit["path"], "wb") as f:
            f.write(saved)
    assert client.get(hit["crop_url"]).status_code == 200


def test_cli_serve_refuses_a_busy_port_and_warns_without_a_token(blob_root):
    import socket

    from typer.testing import CliRunner

    from objsearch.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--index", str(blob_root / "idx"), "--port", str(port)])
        assert result.exit_code == 1 and "cannot listen on 127.0.0.1" in result.output and "Traceback" not in result.output
        assert "warning" not in result.output
        result = CliRunner().invoke(app, ["serve", "--index", str(blob_root / "idx"), "--host", "0.0.0.0", "--port", str(port)])
        assert result.exit_code == 1 and "without --token" in result.output and "cannot listen" in result.output
    result = CliRunner().invoke(app, ["serve", "--index", str(blob_root / "idx"), "--token", " "])
    assert result.exit_code == 1 and "--token must not be empty" in result.output
