"""Shared fixtures. Real photos come from installed packages; synthetic scenes are generated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.skips_fail_in_ci"]

REPO = Path(__file__).resolve().parents[1]
BLOBS = "objsearch.datasets.blob_embedder:build"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The ONNX export of the text encoder (``objsearch.model.onnx_text``) goes to this session's
    temporary folder, for this process and the CLI subprocesses, never to the user's cache."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("OBJSEARCH_CACHE")
    os.environ["OBJSEARCH_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("OBJSEARCH_CACHE", None)
    else:
        os.environ["OBJSEARCH_CACHE"] = previous


@pytest.fixture(scope="session")
def sample_photos(tmp_path_factory) -> Path:
    from objsearch.samples import gather_sample_photos

    folder = tmp_path_factory.mktemp("photos")
    gather_sample_photos(folder)
    return folder


@pytest.fixture(scope="session")
def bundled_embedder():
    from objsearch.embedders import load_embedder

    return load_embedder("bundled")


@pytest.fixture(scope="session")
def bundled_index(sample_photos, bundled_embedder, tmp_path_factory) -> Path:
    """The sample photos indexed once with the bundled embedder (shared, read-only)."""
    from indexer.pipeline import IndexOptions, index_folders

    root = tmp_path_factory.mktemp("bundled-index")
    index_folders([sample_photos], root, embedder=bundled_embedder, options=IndexOptions(progress=False, workers=1))
    return root


def run_cli(*args: str, timeout: float = 300, env_extra: dict[str, str] | None = None, **kwargs):
    """`python -m objsearch ARGS` in a subprocess (tests/ importable, for the blob embedder), with
    ``env_extra`` added to the environment."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "objsearch", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO, **kwargs)
