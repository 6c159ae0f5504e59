"""The bundled embedder's indexing rate at two commits, side by side in one run.

    python -m benchmarks.bundled_rate --before 2476b04 [--copies 8] [--rounds 3] [--out FILE]

The ``--before`` commit is checked out into a temporary git worktree; then, round after round, the
same folder of sample photos (``--copies`` copies of each, under distinct names) is indexed into a
fresh index by that commit's code and by the working tree's, each in its own process, the two
alternating so that the machine's drift falls on both. Reported per side: the median images per
second of ``index_folders`` (the model loaded before the clock starts) and of the whole process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.engine_speed import copied_samples
from benchmarks.provenance import commit, report

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "bundled_rate" / "samples.json"
# Run inside each tree (its own objsearch first on sys.path): index PHOTOS into INDEX, print the rate.
_TIMED = """
import json, sys, time
started = time.perf_counter()
import objsearch
from indexer.pipeline import IndexOptions, index_folders
from objsearch.embedders import load_embedder
embedder = load_embedder("bundled")
summary = index_folders([sys.argv[1]], sys.argv[2], embedder=embedder, options=IndexOptions(progress=False))
print(json.dumps({"images": summary.indexed, "objects": summary.objects_added, "rate": summary.images_per_second,
                  "process_seconds": time.perf_counter() - started, "code": objsearch.__file__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare the working tree with")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    code = commit()

    work = Path(tempfile.mkdtemp(prefix="bundled-rate-"))
    before_tree = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.before], cwd=REPO, check=True, capture_output=True)
    try:
        photos = copied_samples(work, args.copies)
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for round_number in range(args.rounds):
            for side, tree in (("before", before_tree), ("after", REPO)):
                index = work / f"index-{side}-{round_number}"
                out = subprocess.run([sys.executable, "-c", _TIMED, str(photos), str(index)], cwd=tree, check=True,
                                     capture_output=True, text=True)
                run = json.loads(out.stdout.strip().splitlines()[-1])
                if not run["code"].startswith(str(tree)):
                    raise RuntimeError(f"the {side} run imported {run['code']}, not the code in {tree}")
                runs[side].append(run)
                shutil.rmtree(index)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=REPO, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    summary = {side: {"images": r[0]["images"], "objects": r[0]["objects"],
                      "images_per_second_median": round(statistics.median(x["rate"] for x in r), 2),
                      "images_per_second_runs": [round(x["rate"], 2) for x in r],
                      "process_seconds_median": round(statistics.median(x["process_seconds"] for x in r), 1)} for side, r in runs.items()}
    report(args.out, {
        "what": "the bundled embedder's indexing rate: the --before commit against the working tree, alternating, one run",
        "before": args.before, "copies": args.copies, "rounds": args.rounds, **summary,
        "after_over_before": round(summary["after"]["images_per_second_median"] / summary["before"]["images_per_second_median"], 3),
    }, code=code)


if __name__ == "__main__":
    main()
