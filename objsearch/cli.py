"""The `objsearch` command. Each command parses its options and makes one library call.

The library raises ObjsearchError for anything a user can fix; here it becomes a one-line
message on stderr and exit status 1, never a traceback. A closed stdout (`objsearch query ... |
head -1`) ends the command quietly with status 141 (128 + SIGPIPE), as other Unix tools end.
Help is rendered as plain text (no rich markup, which would eat "[default: ...]").
"""

from __future__ import annotations

import json
import logging
import os
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from objsearch.errors import BadQuery, ObjsearchError

app = typer.Typer(
    help="Object-level image search: index every object in your photos, then find them by text or by example.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

IndexOption = Annotated[
    Path | None,
    typer.Option("--index", envvar="OBJSEARCH_INDEX", metavar="DIR", help="Index directory [default: ./.objsearch].", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
IndexTypeOption = Annotated[str | None, typer.Option("--index-type", help="FAISS factory string for the vectors (e.g. 'IVF4096,SQ8'), or 'auto' (chosen by size and memory budget).", show_default=False)]
MaxMemoryOption = Annotated[str | None, typer.Option("--max-index-memory", help="Memory budget of the vector index, e.g. 4GB or 512MB ('0' = none).", show_default=False)]
TimeLimitOption = Annotated[float, typer.Option("--time-limit", min=0.001, max=86_400, metavar="SECONDS", help="Stop the query with an error after this many seconds.")]

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TB": 1 << 40}


def parse_byte_size(text: str | None) -> int | None:
    """'4GB' -> 4294967296 (binary units); None stays None."""
    if text is None:
        return None
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*", text.upper())
    if not match:
        raise BadQuery(f"--max-index-memory wants a size like 4GB or 512MB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _index_type(text: str | None) -> str | None:
    return None if text is None else ("" if text.strip().lower() == "auto" else text.strip())


def _friendly_errors(command):
    @wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ObjsearchError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except BrokenPipeError:  # the reader of stdout went away: stop quietly, as `head` expects
            _silence_stdout()
            raise typer.Exit(141) from None
        except OSError as exc:  # disk full, I/O error, permissions: commits are atomic
            where = f": {exc.filename}" if exc.filename else ""
            typer.echo(f"error: {exc.strerror or exc}{where} (the index keeps its last committed state)", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; the index keeps its last committed state", err=True)
            raise typer.Exit(130) from None

    return run


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (e.g. captured by a test runner)
        pass
    finally:
        os.close(devnull)


class _StderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is when the record comes (a test runner such as
    typer's CliRunner swaps it for every invocation), so the library's warnings reach the user."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler assigns it; the current sys.stderr is always used
        pass


@app.callback()
def _configure(ctx: typer.Context,
               verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (INFO).")] = False) -> None:
    # The library's WARNING records (INFO with -v) go to stderr, one line each, for the command's run.
    # Not logging.basicConfig: it does nothing where the root logger already has a handler (a host
    # program, a test runner), and the user would never see the warning.
    root = logging.getLogger()
    handler, level = _StderrHandler(), root.level
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(level)

    ctx.call_on_close(restore)
    for noisy in ("transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@app.command()
@_friendly_errors
def index(
    folders: Annotated[list[Path], typer.Argument(help="Folders (searched recursively) or image files.", show_default=False)],
    index_path: IndexOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Embedder name, 'module:factory', or checkpoint dir [default: the index's own, or bundled].", show_default=False)] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", metavar="GLOB", help="Glob of paths to skip; repeatable.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=0, help="Images per forward pass (0 = chosen for the device).")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Decoding processes (0 = automatic).")] = 0,
    commit_every: Annotated[int, typer.Option("--commit-every", min=1, help="Images per commit: the most a kill can lose.")] = 64,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Skip images with more pixels (bomb guard).")] = 100_000_000,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    index_type: IndexTypeOption = None,
    max_index_memory: MaxMemoryOption = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="ADDRESS", help="Decode and embed on Ray (pip install 'objsearch[ray]'): 'local' starts Ray on this machine, 'auto' joins the cluster this machine is in, or HOST:PORT.", show_default=False)] = None,
    ray_actors: Annotated[int, typer.Option("--ray-actors", min=0, help="Model actors on Ray (0 = one per GPU, or one per 4 CPUs).")] = 0,
) -> None:
    """Detect and embed every object in the images below FOLDERS; only new or changed files are processed."""
    from indexer.pipeline import IndexOptions, index_folders

    if ray is not None and not ray.strip():
        raise BadQuery("--ray wants an address: 'local', 'auto' or HOST:PORT")
    options = IndexOptions(exclude=tuple(exclude or ()), batch_size=batch_size, workers=workers, commit_every=commit_every,
                           max_pixels=max_pixels, progress=progress, index_type=_index_type(index_type), max_index_memory=parse_byte_size(max_index_memory),
                           ray=ray, ray_actors=ray_actors)
    summary = index_folders(folders, index_path, model=model, options=options)
    recovered = f", {summary.recovered} more from an earlier run's staged work" if summary.recovered else ""
    typer.echo(
        f"indexed {summary.indexed} images ({summary.objects_added} objects){recovered} in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.2f} images/s); unchanged {summary.unchanged}, touched {summary.touched}, "
        f"removed {summary.removed}, skipped {len(summary.skipped)}"
    )
    for path, reason in summary.skipped:
        typer.echo(f"  skipped {path}: {reason}")
    if summary.failed:
        for path, reason in summary.failed[:MAX_LISTED_FAILURES]:
            typer.echo(f"  not indexed {path}: {reason}")
        if len(summary.failed) > MAX_LISTED_FAILURES:
            typer.echo(f"  ... and {len(summary.failed) - MAX_LISTED_FAILURES} more not indexed")
        raise ObjsearchError(f"{len(summary.failed)} files were not indexed (see above); run the same command again to retry them")


MAX_LISTED_FAILURES = 50  # files listed as not indexed; the rest are counted


OUTPUT_FORMATS = ("table", "json", "csv", "coco")
MAX_GROUP_MEMBERS_SHOWN = 20  # objects listed per duplicates group


def _export(hits, photos: Path | None, link: bool, crops: Path | None) -> None:
    """Photos and crops of the hits into their folders; what was written goes to stderr, so the
    hits printed on stdout stay machine-readable."""
    if photos is None and crops is None:
        return
    from objsearch.export import export_files

    written = export_files(hits, photos=photos, link=link, crops=crops)
    if photos is not None:
        typer.echo(f"{'linked' if link else 'copied'} {len(written['photos'])} photos into {photos}", err=True)
    if crops is not None:
        typer.echo(f"wrote {len(written['crops'])} crops into {crops}", err=True)


def _parse_box(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise BadQuery(f"--box wants four numbers x1,y1,x2,y2 in pixels, got {text!r}")
    return values  # type: ignore[return-value]


@app.command()
@_friendly_errors
def query(
    text: Annotated[str | None, typer.Argument(help="What to look for, e.g. 'red umbrella', or terms combined: '2:dog + @123 - grass' (@ID an indexed object, @FILE[x1,y1,x2,y2] an image region).", show_default=False)] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Find objects like this image (or a --box of it).")] = None,
    box: Annotated[str | None, typer.Option("--box", help="x1,y1,x2,y2 pixels of --image.")] = None,
    object_id: Annotated[int | None, typer.Option("--object", help="Find objects like this indexed object id.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, metavar="K", help="How many results.")] = 10,
    where: Annotated[str | None, typer.Option("--where", help="SQL predicate on object/image columns, e.g. \"label = 'dog' AND width > 500\".")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop results whose similarity is below this.")] = None,
    per_image: Annotated[bool, typer.Option("--per-image", help="Keep only the best object of each image.")] = False,
    as_json: JsonOption = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML gallery with the boxes drawn.")] = None,
    index_path: IndexOption = None,
    model: Annotated[str | None, typer.Option("--model", help="Must be the model that built the index.")] = None,
    time_limit: TimeLimitOption = 30.0,
    output_format: Annotated[str, typer.Option("--format", help="How to print the hits: table, json, csv, or coco (a COCO detection file).")] = "table",
    export: Annotated[Path | None, typer.Option("--export", metavar="DIR", help="Copy the matched photos into DIR.")] = None,
    link: Annotated[bool, typer.Option("--link", help="With --export: symlink the photos instead of copying them.")] = False,
    crops: Annotated[Path | None, typer.Option("--crops", metavar="DIR", help="Write each matched object's crop into DIR as <object_id>.jpg.")] = None,
    dedup: Annotated[bool, typer.Option("--dedup", help="Drop each hit at least 0.95 similar to a better ranked hit shown, so nearly identical objects appear once.")] = False,
    mode: Annotated[str, typer.Option("--mode", help="How TEXT ranks objects: vector (embeddings), keyword (its words in labels and captions, full-text BM25) or hybrid (both, fused by rank).")] = "vector",
) -> None:
    """Search by TEXT, by an example region (--image [--box]) or by an indexed object (--object)."""
    from objsearch.search import open_index

    modes = [text is not None, image is not None, object_id is not None]
    if sum(modes) != 1:
        raise BadQuery("give exactly one of: a TEXT query, --image FILE, or --object ID")
    if box is not None and image is None:
        raise BadQuery("--box needs --image")
    if output_format not in OUTPUT_FORMATS:
        raise BadQuery(f"--format is one of {', '.join(OUTPUT_FORMATS)}, not {output_format!r}")
    if as_json and output_format not in ("table", "json"):
        raise BadQuery("--json and --format disagree; give one")
    output_format = "json" if as_json else output_format
    if link and export is None:
        raise BadQuery("--link needs --export DIR")
    if mode != "vector" and text is None:
        raise BadQuery(f"--mode {mode} needs a TEXT query (--image and --object search by vector)")
    options = dict(where=where, min_score=min_score, per_image=per_image)
    from objsearch.duplicates import DEDUP_DEPTH, without_duplicates

    with open_index(index_path, model=model, time_limit_s=time_limit) as idx:
        depth = top_k * DEDUP_DEPTH if dedup else top_k
        if text is not None:
            hits, title = idx.search(text, depth, mode=mode, **options), text
        elif image is not None:
            hits, title = idx.search_region(image, _parse_box(box) if box else None, depth, **options), f"like {image}"
        else:
            hits, title = idx.search_object(object_id, depth, **options), f"like object {object_id}"
        if dedup:
            hits = without_duplicates(idx, hits)[:top_k]
        masks = idx.masks([h.object_id for h in hits]) if html else {}
    if html:
        from objsearch.render import render_gallery

        render_gallery(hits, html, title=f"objsearch: {title}", masks=masks)
    _export(hits, export, link, crops)
    if output_format != "table":
        from objsearch import export as exports

        formats = {"json": lambda: json.dumps([h.to_dict() for h in hits], indent=2), "csv": lambda: exports.hits_csv(hits).rstrip("\n"),
                   "coco": lambda: exports.hits_coco_json(hits)}
        typer.echo(formats[output_format]())
        return
    if not hits:
        typer.echo("no results")
    for h in hits:
        x1, y1, x2, y2 = (round(v) for v in h.box_xyxy)
        typer.echo(f"{h.rank:>3}  {h.ranking_score:.3f}  {h.label:<16} [{x1},{y1},{x2},{y2}]  {h.path}  (object {h.object_id}: {h.caption})")
    if html:
        typer.echo(f"gallery: {html}")


@app.command()
@_friendly_errors
def duplicates(
    threshold: Annotated[float, typer.Option("--threshold", min=0.5, max=1.0, help="Objects at least this similar (cosine) are near-identical.")] = 0.95,
    index_path: IndexOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Groups to list, largest first.")] = 50,
) -> None:
    """List groups of near-identical objects (the same object in burst shots, copies, crops)."""
    from objsearch.duplicates import duplicate_groups
    from objsearch.search import open_index

    with open_index(index_path) as idx:
        groups = duplicate_groups(idx, threshold)
        shown = [[idx.object(object_id) for object_id in group[:MAX_GROUP_MEMBERS_SHOWN]] for group in groups[:limit]]
    if as_json:
        typer.echo(json.dumps({"groups": len(groups), "objects": sum(map(len, groups)), "shown": shown}, indent=2))
        return
    typer.echo(f"{len(groups)} groups of near-identical objects ({sum(map(len, groups))} objects, similarity >= {threshold:g})")
    for number, group in enumerate(shown, 1):
        size = len(groups[number - 1])
        typer.echo(f"group {number}: {size} objects" + (f" (the first {len(group)} shown)" if size > len(group) else ""))
        for row in group:
            box = ",".join(str(round(row[c])) for c in ("x1", "y1", "x2", "y2"))
            typer.echo(f"  object {row['object_id']:<8} {row['label']:<16} [{box}]  {row['path']}")
    if len(groups) > limit:
        typer.echo(f"... and {len(groups) - limit} more groups (--limit)")


@app.command()
@_friendly_errors
def info(index_path: IndexOption = None, as_json: JsonOption = False) -> None:
    """Counts, model, index type, size on disk and the files that could not be indexed."""
    from objsearch.search import open_index

    with open_index(index_path) as idx:
        report = {**idx.info(), "errors": [{"path": p, "error": e} for p, e in idx.errors()]}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if key == "errors":
            continue
        typer.echo(f"{key:>16}: {json.dumps(value) if isinstance(value, dict) else value}")
    for err in report["errors"]:
        typer.echo(f"  error: {err['path']}: {err['error']}")


@app.command()
@_friendly_errors
def sql(
    statement: Annotated[str, typer.Argument(help="One SELECT over the tables images, objects and objects_images.")],
    index_path: IndexOption = None,
    as_json: JsonOption = False,
    time_limit: TimeLimitOption = 30.0,
) -> None:
    """Run a read-only SQL query over the index's tables (DuckDB)."""
    from objsearch.search import open_index

    with open_index(index_path, time_limit_s=time_limit) as idx:
        columns, rows = idx.sql(statement)
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, r)) for r in rows], indent=2, default=str))
        return
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join("" if v is None else str(v) for v in row))


@app.command()
@_friendly_errors
def reindex(
    index_type: IndexTypeOption = None,
    max_index_memory: MaxMemoryOption = None,
    index_path: IndexOption = None,
) -> None:
    """Rebuild the vector index from the stored embeddings (optionally as another type)."""
    from objsearch.store.commit import IndexWriter
    from objsearch.store.layout import resolve_index_path
    from objsearch.store.manifest import read_manifest

    root = resolve_index_path(index_path)
    with IndexWriter(root, read_manifest(root).embedder, index_type=_index_type(index_type), max_index_memory=parse_byte_size(max_index_memory)) as writer:
        writer.rebuild_vectors()
        writer.commit()
        manifest = writer.manifest
    typer.echo(f"rebuilt the vector index: {manifest.index_type}, {manifest.counts['objects']} vectors")


@app.command()
@_friendly_errors
def compact(index_path: IndexOption = None) -> None:
    """Merge every segment and images shard into one each and drop deleted objects' rows for good.
    (Indexing merges small segments by itself; this is for after large deletions, or before archiving.)"""
    from objsearch.store.commit import compact_index
    from objsearch.store.layout import resolve_index_path
    from objsearch.store.manifest import index_size_bytes

    from objsearch.store.upgrade import OLD_FORMAT, manifest_format

    root = resolve_index_path(index_path)
    upgrading = manifest_format(root) == OLD_FORMAT
    size_before = None if upgrading else index_size_bytes(root)
    before, after = compact_index(root)
    if upgrading:
        typer.echo(f"upgraded {root} to format {after.format_version} ({len(before.segments)} segments)")
        size_before = sum(e.size for e in before.files())
    typer.echo(f"compacted {root}: {len(before.segments)} segments -> {len(after.segments)}, {len(before.files())} files -> {len(after.files())}, "
               f"{before.tombstone_count} deleted objects' rows dropped, {size_before:,} -> {index_size_bytes(root):,} bytes")


@app.command()
@_friendly_errors
def doctor(
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild what can be rebuilt from the remaining data.")] = False,
    index_path: IndexOption = None,
) -> None:
    """Verify every index file against the manifest's checksums, and FAISS against Parquet."""
    from objsearch.store.doctor import run_doctor
    from objsearch.store.layout import resolve_index_path

    root = resolve_index_path(index_path)
    report = run_doctor(root, repair=repair)
    for problem in report.problems:
        typer.echo(f"problem: {problem.path}: {problem.what}")
    for line in report.repairs:
        typer.echo(f"repaired: {line}")
    if report.remaining:
        if repair:
            for problem in report.remaining:
                typer.echo(f"still broken: {problem.path}: {problem.what}")
        raise ObjsearchError(f"{len(report.remaining)} problem(s) in {root}" + ("" if repair else "; run `objsearch doctor --repair`"))
    problems = report.problems
    typer.echo("index is healthy" + (" after repair; run `objsearch index` to re-embed what was dropped" if problems else ""))


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@app.command()
@_friendly_errors
def serve(
    index_path: IndexOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but this machine needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    token: Annotated[str | None, typer.Option("--token", envvar="OBJSEARCH_TOKEN", help="Require 'Authorization: Bearer TOKEN' on every API route but health.", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Must be the model that built the index [default: the recorded one].", show_default=False)] = None,
    cors: Annotated[list[str] | None, typer.Option("--cors", metavar="ORIGIN", help="Allow this origin to call the API from a browser (repeatable).", show_default=False)] = None,
    time_limit: TimeLimitOption = 30.0,
) -> None:
    """Serve the index over HTTP: a JSON API under /api/v1 and a search page at /. It follows new
    commits of an `objsearch index` running beside it; Ctrl-C stops it."""
    import socket

    import uvicorn

    from objsearch.serve.app import create_app

    if token is not None and not token.strip():
        raise BadQuery("--token must not be empty")
    if host not in LOCAL_HOSTS and token is None:
        typer.echo(f"warning: serving on {host} without --token: anyone who can reach this machine can search the index and see its photos", err=True)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise BadQuery(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None
    application = create_app(index_path, model=model, token=token, time_limit_s=time_limit, cors_origins=cors or None)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"objsearch: serving {application.state.live.root} at http://{shown}:{port}/ (Ctrl-C stops)", err=True)
    try:
        uvicorn.run(application, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then raises the signal again
        pass
    typer.echo("objsearch: stopped", err=True)


@app.command()
@_friendly_errors
def samples(dest: Annotated[Path, typer.Argument(help="Folder to copy the photos into.")]) -> None:
    """Copy the real sample photos that ship in installed packages (scikit-image, matplotlib, darknet) into DEST."""
    from objsearch.samples import gather_sample_photos

    copies = gather_sample_photos(dest)
    if not copies:
        raise ObjsearchError("no sample photos found: install scikit-image or matplotlib (pip install 'objsearch[demo]')")
    typer.echo(f"{len(copies)} sample photos in {dest}")


bench_app = typer.Typer(help="Benchmarks: measure models on your own COCO-format data, or on real sample photos.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("coco-search")
@_friendly_errors
def bench_coco_search(
    data: Annotated[Path | None, typer.Option("--data", help="COCO-format directory: annotations/instances_*.json + images (optional refs_*.json) (default: the built-in synthetic set).", show_default=False)] = None,
    model: Annotated[list[str] | None, typer.Option("--model", metavar="MODEL", help="Embedder name, 'module:factory', or checkpoint dir; repeat to compare several (default: bundled).", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Which instances_SPLIT.json to measure, e.g. val2017 or val (default: test, else val).", show_default=False)] = None,
    max_images: Annotated[int | None, typer.Option("--max-images", min=1, metavar="N", help="Measure only the first N images (by id).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json, results.md and pr_curve.png.")] = Path("bench-results"),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic set and of sampled queries.")] = 0,
) -> None:
    """Run every --model on the same COCO-format split: detection AP, text/object retrieval, zero-shot, kNN purity, CIDEr, speed."""
    from benchmarks.coco_search import run_coco_search
    from benchmarks.report import LEGEND, markdown_table

    results = run_coco_search(data, model or ["bundled"], out, max_images, seed, split=split)
    typer.echo(markdown_table(results))
    typer.echo(f"\n{LEGEND}\n\nwritten: {out / 'results.json'}, {out / 'results.md'}, {out / 'pr_curve.png'}")


@bench_app.command("real-photos")
@_friendly_errors
def bench_real_photos(
    model: Annotated[list[str] | None, typer.Option("--model", metavar="MODEL", help="Embedder name, 'module:factory', or checkpoint dir; repeat to compare several (default: bundled).", show_default=False)] = None,
    mode: Annotated[list[str] | None, typer.Option("--mode", metavar="MODE", help="Search mode: vector, keyword or hybrid; repeat for several (default: vector).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and results.md.")] = Path("bench-results"),
    held_out: Annotated[bool, typer.Option("--held-out", help="The held-out set (12 photos of OpenCV's sample data; `make opencv-photos`) instead of the 20-photo set.")] = False,
) -> None:
    """R@1 and R@5 by query kind on 20 real photos from installed packages, with hand-drawn boxes."""
    from benchmarks.real_photos import markdown, run_real_photos
    from objsearch.datasets.real_photos import ANNOTATIONS, HELD_OUT
    from objsearch.search import SEARCH_MODES

    modes = mode or ["vector"]
    if bad := [m for m in modes if m not in SEARCH_MODES]:
        raise BadQuery(f"--mode is one of {', '.join(SEARCH_MODES)}, not {bad[0]!r}")
    results = run_real_photos(model or ["bundled"], modes, out, annotations=HELD_OUT if held_out else ANNOTATIONS)
    typer.echo(markdown(results))
    typer.echo(f"\nwritten: {out / 'results.json'}, {out / 'results.md'}")


def main() -> None:
    app()
