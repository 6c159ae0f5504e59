"""The command line, through typer's CliRunner and one real subprocess."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from objsearch.cli import app
from objsearch.datasets.scenes import make_dataset
from tests.conftest import BLOBS, run_cli

runner = CliRunner()


@pytest.fixture(scope="module")
def blob_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_dataset(root / "imgs", 6)
    result = runner.invoke(app, ["index", str(root / "imgs"), "--index", str(root / "idx"), "--model", BLOBS, "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "indexed 6 images" in result.output
    return root / "idx"


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("index", "query", "info", "sql"):
        assert command in result.output


def test_python_m_objsearch_help_in_a_subprocess():
    result = run_cli("--help", timeout=60)
    assert result.returncode == 0 and "query" in result.stdout


def test_query_json_and_filters(blob_index):
    result = runner.invoke(app, ["query", "red", "--index", str(blob_index), "--json", "-k", "50"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert hits and all(h["label"] == "red box" for h in hits if h["similarity"] > 0.9)
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    filtered = json.loads(runner.invoke(app, ["query", "red", "--index", str(blob_index), "--json", "--where", "label = 'blue box'"]).output)
    assert filtered and {h["label"] for h in filtered} == {"blue box"}
    strong = json.loads(runner.invoke(app, ["query", "red", "--index", str(blob_index), "--json", "-k", "50", "--min-score", "0.9"]).output)
    assert strong and all(h["similarity"] >= 0.9 for h in strong) and len(strong) < len(hits)
    per_image = json.loads(runner.invoke(app, ["query", "red", "--index", str(blob_index), "--json", "-k", "50", "--per-image"]).output)
    assert len({h["path"] for h in per_image}) == len(per_image) == 6


def test_a_composed_query_from_the_command_line(blob_index):
    hits = json.loads(runner.invoke(app, ["query", "red + 2:blue", "--index", str(blob_index), "--json", "-k", "3"]).output)
    assert [h["label"] for h in hits] == ["blue box"] * 3
    hits = json.loads(runner.invoke(app, ["query", "2:red + blue", "--index", str(blob_index), "--json", "-k", "3"]).output)
    assert [h["label"] for h in hits] == ["red box"] * 3


def test_object_to_object_and_image_region_queries(blob_index, tmp_path):
    first = json.loads(runner.invoke(app, ["query", "blue", "--index", str(blob_index), "--json", "-k", "1"]).output)[0]
    like = runner.invoke(app, ["query", "--object", str(first["object_id"]), "--index", str(blob_index), "--json", "-k", "3"])
    assert like.exit_code == 0, like.output
    similar = json.loads(like.output)
    assert first["object_id"] not in [h["object_id"] for h in similar]
    assert similar[0]["label"] == "blue box"
    box = ",".join(str(int(v)) for v in first["box_xyxy"])
    region = json.loads(runner.invoke(app, ["query", "--image", first["path"], "--box", box, "--index", str(blob_index), "--json", "-k", "1"]).output)
    assert region[0]["object_id"] == first["object_id"]
    page = tmp_path / "g.html"
    assert runner.invoke(app, ["query", "blue", "--index", str(blob_index), "--html", str(page)]).exit_code == 0
    assert "blue box" in page.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", "red", "--where", "no_such_column = 1"], "bad --where predicate"),
        (["query", "red", "--where", "1=1; DROP TABLE objects"], "--where"),
        (["query", "--object", "999999"], "no object with id 999999"),
        (["query", "--image", "x.png", "--box", "1,2,3"], "--box wants four numbers"),
        (["query"], "give exactly one of"),
        (["query", "   "], "query text is empty"),
        (["query", "red + "], "bad query at character 5"),
        (["query", "red - @999999"], "no object with id 999999"),
        (["sql", "COPY objects TO '/tmp/stolen.csv'"], "only SELECT"),
        (["sql", "SELECT * FROM read_csv('/etc/passwd')"], "SQL error"),
        (["query", "red", "--model", "objsearch.datasets.blob_embedder:build_other"], "cannot be used with 'other-blobs'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_1(blob_index, args, message):
    result = runner.invoke(app, [*args, "--index", str(blob_index)])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_flag_is_a_usage_error():
    result = runner.invoke(app, ["query", "red", "--no-such-flag"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_query_without_an_index_says_so(tmp_path):
    result = runner.invoke(app, ["query", "red", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no index at" in result.output


def test_index_from_env_var_info_and_sql(blob_index, monkeypatch):
    monkeypatch.setenv("OBJSEARCH_INDEX", str(blob_index))
    info = json.loads(runner.invoke(app, ["info", "--json"]).output)
    assert info["images"] == 6 and info["objects"] == 18 and info["model"]["name"] == "test-blobs"
    assert info["size_bytes"] > 0 and info["bytes_per_object"] > 0
    result = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM objects WHERE label = 'red box'", "--json"])
    red_in_scenes = sum(a["colour"] == "red" for scene in make_dataset(blob_index.parent / "again", 6).values() for a in scene)
    assert result.exit_code == 0 and json.loads(result.output)[0]["n"] == red_in_scenes > 0


def test_reindexing_without_model_uses_the_index_own_model(blob_index):
    result = runner.invoke(app, ["index", str(blob_index.parent / "imgs"), "--index", str(blob_index), "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "indexed 0 images" in result.output and "unchanged 6" in result.output


def test_indexing_a_missing_folder_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["index", str(tmp_path / "nope"), "--index", str(tmp_path / "idx"), "--model", BLOBS])
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_index_pointing_at_a_regular_file_says_so(tmp_path):
    not_a_folder = tmp_path / "index.txt"
    not_a_folder.write_text("my notes")
    make_dataset(tmp_path / "imgs", 1)
    for args in (["index", str(tmp_path / "imgs"), "--model", BLOBS], ["query", "red"], ["info"]):
        result = runner.invoke(app, [*args, "--index", str(not_a_folder)])
        assert result.exit_code == 1
        assert result.output.strip() == f"error: {not_a_folder} is a file, not an index directory; give --index a directory (new or holding an index)"
    assert not_a_folder.read_text() == "my notes"


def test_a_named_file_that_is_no_image_is_reported_and_recorded(tmp_path):
    notes = tmp_path / "notimage.txt"
    notes.write_text("not an image")
    result = runner.invoke(app, ["index", str(notes), "--index", str(tmp_path / "idx"), "--model", BLOBS, "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "skipped 1" in result.output and f"skipped {notes}: not an image" in result.output
    info = json.loads(runner.invoke(app, ["info", "--json", "--index", str(tmp_path / "idx")]).output)
    assert info["errors"] == [{"path": str(notes), "error": "not an image or unsupported format"}]


def test_a_closed_stdout_ends_the_query_quietly(blob_index):
    """`objsearch query ... | head -1`: the reader is gone before the first line is written."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen([sys.executable, "-m", "objsearch", "query", "red", "--index", str(blob_index)], stdout=write_end,
                          stderr=subprocess.PIPE, text=True, env=env, cwd=REPO) as process:
        os.close(write_end)
        stderr = process.stderr.read()
        status = process.wait(timeout=120)
    assert stderr == "" and status == 141  # 128 + SIGPIPE, as `yes | head -1` ends


def _all_commands(group, prefix=()):
    import click

    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def test_every_help_page_shows_its_texts_whole():
    """Markup must not eat any part of a help text (it once showed "Index directory ." for
    "Index directory [default: ./.objsearch].")."""
    import typer

    top = typer.main.get_command(app)
    for path, command in [((), top), *_all_commands(top)]:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, path
        shown = _squeeze(result.output)
        assert _squeeze((command.help or "").split("\n\n")[0]) in shown, path
        for param in command.params:
            if getattr(param, "help", None):
                assert _squeeze(param.help) in shown, (path, param.name)
        assert "list[" not in shown.split("Options:")[-1], path  # Python type names as option metavars
