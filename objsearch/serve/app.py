"""The HTTP API (``/api/v1``) and the search page (``/``) over one live index.

    app = create_app(".objsearch", token="s3cret")   # then: uvicorn.run(app, port=8765)

Routes (every one in the OpenAPI schema at ``/api/v1/openapi.json``):

    GET  /api/v1/health                     liveness; the only route that needs no token
    GET  /api/v1/info                       counts, model, index type, size, generation
    GET  /api/v1/labels                     labels with their live object counts (facets)
    GET  /api/v1/search?text=|object_id=    search by text or by an indexed object
    POST /api/v1/search                     the same, or by an uploaded image (base64) and a box
    POST /api/v1/export                     a search's hits as a file: CSV or a COCO detection file
    GET  /api/v1/objects/{id}               one object with its image's path and size
    GET  /api/v1/objects/{id}/crop?size=    the object's crop, JPEG
    GET  /api/v1/images/{id}                one image with its objects
    GET  /api/v1/images/{id}/file?size=     the image, upright, JPEG

Searches page with ``k`` (at most MAX_K) and ``offset`` (offset + k at most MAX_DEPTH); a response
gives ``next_offset`` while more may follow. Errors are JSON ``{"error": "one line"}`` with a 4xx
status (503 while no index exists yet or the server is busy); the server keeps running.

Security: with a token, every route but health and the static page needs ``Authorization: Bearer
TOKEN``, checked before any body is read (``limits.TokenRequired``); pictures are served by id for files the index names, never by a path from the request;
request bodies are limited to MAX_BODY_BYTES before they are read; ``where`` goes through the
catalog's read-only predicate rules and every search through the index's time limit; no CORS
header is sent unless origins are given. FastAPI's docs pages load their scripts from a CDN, so
they are off: the schema is served as JSON.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from objsearch.errors import BadImage, BadQuery, IndexCorrupt, IndexNotFound, NotFound, ObjsearchError, QueryTimeout, first_line
from objsearch.hits import Hit
from objsearch.image_decode import decode_image_bytes
from objsearch.query import Query as ComposedQuery  # fastapi.Query is the query-string parameter
from objsearch.search import MAX_QUERY_CHARS, SEARCH_MODES
from objsearch.serve import media
from objsearch.serve.limits import BodySizeLimit, TokenRequired
from objsearch.serve.live import LiveIndex, ServerBusy

logger = logging.getLogger(__name__)

API = "/api/v1"
STATIC = FilePath(__file__).parent / "static"
MAX_K = 100  # hits a page
MAX_DEPTH = 1000  # offset + k: how deep paging may go
PAGE_MARGIN = 10  # hits searched past a page's end (see _search)
MAX_UPLOAD_BYTES = 20 << 20  # an uploaded image, decoded from base64
MAX_BODY_BYTES = MAX_UPLOAD_BYTES * 4 // 3 + (64 << 10)  # its base64 plus the rest of the request
UPLOAD_MAX_PIXELS = 50_000_000
THUMB_SIDE, IMAGE_SIDE = 256, 1600  # default picture sizes (pixels, longest side)
MAX_ID = 2**63 - 1  # ids are int64
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]
SearchMode = Literal[SEARCH_MODES]


# -- request and response shapes ----------------------------------------------------------------------
class SearchOptions(BaseModel):
    k: int = Field(20, ge=1, le=MAX_K, description="hits in this page")
    offset: int = Field(0, ge=0, le=MAX_DEPTH - 1, description="hits to skip (the previous pages)")
    where: str | None = Field(None, description="SQL predicate over object and image columns, e.g. \"label = 'dog'\"")
    min_similarity: float | None = Field(None, ge=-1, le=1, description="drop hits less similar than this")
    per_image: bool = Field(False, description="only the best object of each image")
    mode: SearchMode = Field("vector", description="how text ranks objects: vector (embeddings), keyword (its words in "
                                                   "labels and captions, BM25) or hybrid (both, fused by reciprocal rank)")
    dedup: bool = Field(False, description="drop each hit at least 0.95 similar to a better ranked one")

    @model_validator(mode="after")
    def _depth(self) -> "SearchOptions":
        if self.offset + self.k > MAX_DEPTH:
            raise ValueError(f"offset + k must be at most {MAX_DEPTH}")
        return self


class SearchRequest(SearchOptions):
    """Exactly one of text, object_id and image. ``image``: base64 (or a data: URL) of an image
    file; ``box``: x1, y1, x2, y2 in its pixels (after EXIF orientation), default the whole image."""

    text: str | None = Field(None, max_length=MAX_QUERY_CHARS)
    object_id: int | None = Field(None, ge=0, le=MAX_ID)
    image: str | None = Field(None, description="base64 of an image file, or a data: URL")
    box: list[float] | None = Field(None, min_length=4, max_length=4)

    @model_validator(mode="after")
    def _one_query(self) -> "SearchRequest":
        given = [name for name in ("text", "object_id", "image") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, object_id and image")
        if self.box is not None and self.image is None:
            raise ValueError("box needs image")
        if self.mode != "vector" and self.text is None:
            raise ValueError(f"mode {self.mode} needs text (object_id and image search by vector)")
        return self


class ExportRequest(SearchRequest):
    """A search whose hits come back as a file (``objsearch.export``): CSV, or a COCO detection file."""

    k: int = Field(100, ge=1, le=MAX_DEPTH, description="hits in the file")
    format: Literal["csv", "coco"] = Field("csv", description="csv: one row per hit; coco: a COCO detection file")


class HitOut(BaseModel):
    rank: int
    object_id: int
    image_id: int
    path: str
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the upright image")
    similarity: float | None = Field(description="cosine of the query's and the object's embeddings; null in keyword mode")
    keyword_score: float | None = Field(None, description="BM25 of the query's words in the label and caption (keyword, hybrid)")
    fused_score: float | None = Field(None, description="reciprocal-rank-fusion score the hits are ranked by (hybrid)")
    det_score: float
    label: str
    caption: str | None
    image_width: int | None
    image_height: int | None
    image_url: str
    crop_url: str
    object_url: str


class SearchResponse(BaseModel):
    hits: list[HitOut]
    k: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null when this is the last")
    took_ms: float
    generation: int


class ErrorResponse(BaseModel):
    error: str


# -- the application ----------------------------------------------------------------------------------
def create_app(index_path: str | FilePath | None = None, *, model: Any = None, token: str | None = None,
               time_limit_s: float = 30.0, cors_origins: list[str] | None = None, live: LiveIndex | None = None) -> FastAPI:
    """The server's ASGI app. ``live``: an already opened ``LiveIndex`` (else one is made from
    ``index_path`` and ``model`` and warmed when the app starts)."""
    live = live or LiveIndex(index_path, model=model, time_limit_s=time_limit_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        live.warm()
        yield
        live.close()

    app = FastAPI(title="objsearch", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  responses={400: {"model": ErrorResponse}})
    app.state.live = live
    _install_error_handlers(app)
    router = APIRouter(prefix=API)
    _add_routes(router, live, app)
    app.include_router(_health_router(live))
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    if token is not None:  # added last: runs first, before any body is read
        app.add_middleware(TokenRequired, token=token, prefix=API, open_paths=(f"{API}/health",))
    return app


def _health_router(live: LiveIndex) -> APIRouter:
    router = APIRouter(prefix=API)

    @router.get("/health")
    def health() -> dict:
        """Liveness; ``generation`` is null while no index has been opened."""
        return {"status": "ok", "generation": live.generation}

    return router


def _add_routes(router: APIRouter, live: LiveIndex, app: FastAPI) -> None:
    @router.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @router.get("/info")
    def info() -> dict:
        """Counts, model, index type and size of the generation being served."""
        with live.use() as index:
            report = index.info()
            report["errors"] = len(index.errors())
        return report

    @router.get("/labels")
    def labels() -> list[dict]:
        """Every label with its number of live objects, most frequent first."""
        with live.use() as index:
            return [{"label": label, "count": count} for label, count in index.catalog.label_counts()]

    @router.get("/search", response_model=SearchResponse)
    def search_get(
        text: Annotated[str | None, Query(description="what to look for", max_length=MAX_QUERY_CHARS)] = None,
        object_id: Annotated[int | None, Query(description="find objects like this indexed object", ge=0, le=MAX_ID)] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 20,
        offset: Annotated[int, Query(ge=0, le=MAX_DEPTH - 1)] = 0,
        where: str | None = None,
        min_similarity: Annotated[float | None, Query(ge=-1, le=1)] = None,
        per_image: bool = False,
        mode: SearchMode = "vector",
        dedup: bool = False,
    ) -> dict:
        """Search by text or by an indexed object (exactly one)."""
        try:
            request = SearchRequest(text=text, object_id=object_id, k=k, offset=offset, where=where,
                                    min_similarity=min_similarity, per_image=per_image, mode=mode, dedup=dedup)
        except ValueError as exc:
            raise BadQuery(_validation_message(exc)) from None
        return _search(live, request)

    @router.post("/search", response_model=SearchResponse)
    def search_post(request: SearchRequest) -> dict:
        """Search by text, by an indexed object, or by an uploaded image and an optional box."""
        return _search(live, request)

    @router.post("/export", response_class=Response, responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
    def export(request: ExportRequest) -> Response:
        """The hits of a search (as ``POST /search`` takes it) as a file to download: CSV or COCO."""
        from objsearch.export import hits_coco_json, hits_csv

        hits, _ = _hits(live, request, request.offset + request.k + PAGE_MARGIN)  # deeper, as pages are: the same hits
        hits = hits[request.offset:request.offset + request.k]
        body, media_type, name = ((hits_csv(hits), "text/csv", "objsearch-results.csv") if request.format == "csv"
                                  else (hits_coco_json(hits), "application/json", "objsearch-results.coco.json"))
        return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @router.get("/objects/{object_id}")
    def get_object(object_id: IdPath) -> dict:
        """One object: its box, label, caption, score, and its image's id, path and size."""
        with live.use() as index:
            return _object_out(index.object(object_id))

    @router.get("/objects/{object_id}/crop", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def get_crop(object_id: IdPath, size: Annotated[int, Query(ge=media.MIN_SIDE, le=media.MAX_SIDE)] = THUMB_SIDE,
                 pad: Annotated[float, Query(ge=0, le=1)] = 0.05) -> Response:
        """The object's crop (grown by ``pad`` of its size on each side), at most ``size`` pixels a side."""
        with live.use() as index:
            row = index.object(object_id)
        box = [row["x1"], row["y1"], row["x2"], row["y2"]]
        size_of = (row["width"] or 1, row["height"] or 1)
        return _jpeg_response(lambda: media.crop_jpeg(row["path"], box, size_of, size, pad))

    @router.get("/images/{image_id}")
    def get_image(image_id: IdPath) -> dict:
        """One image: path, size, status and its live objects (boxes, labels, captions)."""
        with live.use() as index:
            image = index.image(image_id)
        return {
            "image_id": image["image_id"], "path": image["path"], "width": image["width"], "height": image["height"],
            "status": image["status"], "error": image["error"], "image_url": f"{API}/images/{image_id}/file",
            "objects": [_object_out({**o, "path": image["path"], "width": image["width"], "height": image["height"]})
                        for o in image["objects"]],
        }

    @router.get("/images/{image_id}/file", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def get_image_file(image_id: IdPath, size: Annotated[int, Query(ge=media.MIN_SIDE, le=media.MAX_SIDE)] = IMAGE_SIDE) -> Response:
        """The image, upright, at most ``size`` pixels a side."""
        with live.use() as index:
            row = index.image(image_id, with_objects=False)
        return _jpeg_response(lambda: media.image_jpeg(row["path"], size))


def _search(live: LiveIndex, request: SearchRequest) -> dict:
    """One page: the hits ranked offset .. offset + k of a search PAGE_MARGIN deeper, which tells
    whether more follow, and keeps pages apart where equal similarities straddle a page's end."""
    started = time.perf_counter()
    depth = request.offset + request.k
    hits, generation = _hits(live, request, depth + PAGE_MARGIN)
    page = hits[request.offset:depth]
    more = len(hits) > depth and depth < MAX_DEPTH
    return {
        "hits": [_hit_out(h) for h in page], "k": request.k, "offset": request.offset,
        "next_offset": depth if more else None, "took_ms": round((time.perf_counter() - started) * 1e3, 2),
        "generation": generation,
    }


def _hits(live: LiveIndex, request: SearchRequest, depth: int) -> tuple[list[Hit], int]:
    """The first ``depth`` hits of the request's search (near-duplicates dropped when it asks),
    and the generation they come from."""
    from objsearch.duplicates import DEDUP_DEPTH, without_duplicates

    options = dict(where=request.where, min_score=request.min_similarity, per_image=request.per_image)
    decoded = _decode_upload(request.image) if request.image is not None else None
    with live.use() as index:
        deeper = depth * DEDUP_DEPTH if request.dedup else depth
        if request.text is not None:
            hits = index.search(_composed(request.text), deeper, mode=request.mode, **options)
        elif request.object_id is not None:
            hits = index.search_object(request.object_id, deeper, **options)
        else:
            hits = index.search_pixels(decoded, request.box, deeper, **options)
        if request.dedup:
            hits = without_duplicates(index, hits)[:depth]
        return hits, index.manifest.generation


def _composed(text: str) -> ComposedQuery:
    """The request's text as a composed query; a term naming an image file is refused: the
    server reads no file a request names (an uploaded image is searched with ``image``)."""
    query = ComposedQuery.parse(text)
    if any(term.kind == "region" for term in query.terms):
        raise BadQuery("in a query, '@' names an indexed object id here; to search with an image region, send it as 'image' (base64) with 'box'")
    return query


def _decode_upload(data: str):
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadQuery("image must be base64 (or a data: URL) of an image file") from None
    if len(raw) > MAX_UPLOAD_BYTES:
        raise BadQuery(f"the image is {len(raw):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
    with media.DECODING:
        return decode_image_bytes(raw, "the uploaded image", max_pixels=UPLOAD_MAX_PIXELS)


def _hit_out(hit: Hit) -> dict:
    row = hit.to_dict()
    row["box"] = row.pop("box_xyxy")
    return {**row, **_urls(hit.object_id, hit.image_id)}


def _object_out(row: dict) -> dict:
    return {
        "object_id": row["object_id"], "image_id": row["image_id"], "path": row["path"],
        "box": [row["x1"], row["y1"], row["x2"], row["y2"]], "det_score": row["score"], "label": row["label"],
        "caption": row["caption"], "image_width": row["width"], "image_height": row["height"],
        **_urls(row["object_id"], row["image_id"]),
    }


def _urls(object_id: int, image_id: int) -> dict:
    return {"image_url": f"{API}/images/{image_id}/file", "crop_url": f"{API}/objects/{object_id}/crop",
            "object_url": f"{API}/objects/{object_id}"}


def _jpeg_response(render) -> Response:
    try:
        body = render()
    except BadImage as exc:
        raise NotFound(f"the image file cannot be shown any more ({exc.reason})") from None
    return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


# -- errors: one JSON line each, never a traceback -------------------------------------------------------
def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: Exception) -> str:
    """The first problem of a validation error, as one line: "k: Input should be ..."."""
    errors = getattr(exc, "errors", lambda: [])()
    if not errors:
        return first_line(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


_STATUS: list[tuple[type[Exception], int]] = [
    (NotFound, 404), (QueryTimeout, 504), (BadQuery, 400), (BadImage, 400),
    (IndexNotFound, 503), (IndexCorrupt, 503), (ServerBusy, 503), (ObjsearchError, 500),
]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such route: {request.url.path}"
        return _error(exc.status_code, message)

    @app.exception_handler(ObjsearchError)
    async def domain_error(request: Request, exc: ObjsearchError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        if status == 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(status, first_line(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

