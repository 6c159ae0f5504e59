"""The text encoder on ONNX Runtime: it gives the torch model's embeddings, a text query from the
command line never loads torch, and whatever stops ONNX leaves the torch path working."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from objsearch.model.onnx_text import PROBE_TEXTS, onnx_path_for
from objsearch.model.sentence_encoder import SentenceEncoder, TorchTextModel, packaged_minilm_dir
from tests.conftest import REPO

TEXTS = ["a black dog", "golden retriever", "person in a blue jacket", "hourglass", "a cup of coffee", "x" * 2000, "red " * 300]


def test_onnx_embeddings_match_torch(private_cache):
    encoder = SentenceEncoder()
    assert encoder.runtime == "onnx"
    assert onnx_path_for(packaged_minilm_dir()).is_relative_to(private_cache)
    onnx = encoder.encode(TEXTS + list(PROBE_TEXTS))
    torch = TorchTextModel(packaged_minilm_dir(), device="cpu")(TEXTS + list(PROBE_TEXTS))
    assert onnx.shape == torch.shape == (len(TEXTS) + len(PROBE_TEXTS), 384)
    assert float((onnx * torch).sum(axis=1).min()) >= 1 - 1e-4


def test_a_text_query_from_the_command_line_never_loads_torch(bundled_index, bundled_embedder):
    from objsearch import open_index

    SentenceEncoder()  # the export exists (made at first use, by any process)
    script = ("import sys\nfrom objsearch.cli import main\n"
              f"sys.argv = ['objsearch', 'query', 'dog', '--index', {str(bundled_index)!r}, '-k', '3', '--format', 'json']\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', 'TRANSFORMERS' if 'transformers' in sys.modules else '', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    hits = json.loads(result.stdout)
    with open_index(bundled_index, model=bundled_embedder) as index:  # in this process, on whatever runtime
        expected = index.search_text("dog", 3)
    assert [h["object_id"] for h in hits] == [h.object_id for h in expected], result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].strip() == "NO TORCH"


def test_torch_is_used_when_asked_or_when_onnx_cannot_be_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("OBJSEARCH_TEXT_RUNTIME", "torch")
    assert SentenceEncoder().runtime == "torch"
    monkeypatch.delenv("OBJSEARCH_TEXT_RUNTIME")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("OBJSEARCH_CACHE", str(tmp_path / "a-file" / "cache"))
    encoder = SentenceEncoder()
    assert encoder.runtime == "torch"
    row = encoder.encode(["a dog"])[0]
    assert abs(float(np.linalg.norm(row)) - 1) < 1e-5


def test_an_export_that_does_not_match_is_not_used_and_not_tried_again(monkeypatch, tmp_path):
    import objsearch.model.onnx_text as onnx_text

    monkeypatch.setenv("OBJSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(onnx_text, "MIN_COSINE", 2.0)  # no export can match
    assert SentenceEncoder().runtime == "torch"
    target = onnx_path_for(packaged_minilm_dir())
    assert not target.exists() and target.with_suffix(".failed").is_file()
    monkeypatch.setattr(onnx_text, "export", lambda *a: (_ for _ in ()).throw(AssertionError("exported again")))
    assert SentenceEncoder().runtime == "torch"
