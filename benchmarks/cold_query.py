"""A cold `objsearch query "dog"` on the demo photos, with the text encoder on torch and on ONNX
Runtime, side by side in one run; and the warm cost of embedding one query text on each.

    python -m benchmarks.cold_query [--runs 5] [--out FILE]

The sample photos are indexed once (bundled model) into a temporary folder; then each run is a
fresh process (`python -m objsearch query dog`), the two runtimes alternating, wall time from
start to exit; the ONNX export is made before the first timed run (it is made once per machine).
Warm: 200 distinct one-line texts through each runtime's model in this process (no cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.provenance import commit, report

RESULT = Path(__file__).parent / "results" / "cold_query" / "demo.json"


def summary(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3),
            "runs": [round(v, 3) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    code = commit()

    from indexer.pipeline import IndexOptions, index_folders
    from objsearch.model.onnx_text import OnnxTextModel, load_or_export
    from objsearch.model.sentence_encoder import TorchTextModel, packaged_minilm_dir
    from objsearch.samples import gather_sample_photos

    work = Path(tempfile.mkdtemp(prefix="objsearch-cold-"))
    try:
        gather_sample_photos(work / "photos")
        index_folders([work / "photos"], work / "index", options=IndexOptions(progress=False))
        torch_model = TorchTextModel(packaged_minilm_dir(), device="cpu")
        onnx_model = load_or_export(packaged_minilm_dir(), lambda: torch_model)
        assert isinstance(onnx_model, OnnxTextModel), "no ONNX text encoder on this machine"
        command = [sys.executable, "-m", "objsearch", "query", "dog", "--index", str(work / "index"), "-k", "3"]
        walls: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in range(args.runs):
            for runtime in ("torch", "onnx"):
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OBJSEARCH_TEXT_RUNTIME": runtime})
                walls[runtime].append(time.perf_counter() - started)
        warm = {}
        for name, model in (("torch", torch_model), ("onnx", onnx_model)):
            model(["warm-up"])
            times = []
            for i in range(200):
                started = time.perf_counter()
                model([f"a photo of thing number {i}"])
                times.append((time.perf_counter() - started) * 1e3)
            warm[name] = round(statistics.median(times), 3)
        result = {"photos": len(list((work / "photos").iterdir())), "cold_query_s": {name: summary(v) for name, v in walls.items()},
                  "cold_median_ratio_torch_over_onnx": round(statistics.median(walls["torch"]) / statistics.median(walls["onnx"]), 2),
                  "warm_one_text_ms_median": warm}
        report(args.out, result, code=code)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
