"""Reports of the coco-search benchmark: the Markdown comparison table and the precision-recall plot.

Both read the ``results.json`` dict that ``benchmarks.coco_search.run_coco_search`` returns; a
column appears when at least one model has a value for it (COCOeval's -1, "nothing to average",
counts as no value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # matplotlib draws the PR plot; without it the benchmark stops before measuring anything
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - depends on the install
    from objsearch.errors import ObjsearchError

    raise ObjsearchError("objsearch bench needs matplotlib for its precision-recall plot: pip install matplotlib") from exc

KeyPath = tuple[str, ...]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _plain(value: float) -> str:
    return f"{value:.2f}"


#: (header, where in a model's row, how to print it). Metrics are fractions printed in %.
COLUMNS: list[tuple[str, KeyPath, Callable[[float], str]]] = [
    ("box AP", ("metrics", "detection", "AP"), _percent),
    ("AP50", ("metrics", "detection", "AP50"), _percent),
    ("APr", ("metrics", "detection", "APr"), _percent),
    ("ranked AP", ("metrics", "detection_ranked_labels", "AP"), _percent),
    ("ranked AP50", ("metrics", "detection_ranked_labels", "AP50"), _percent),
    ("mask AP", ("metrics", "mask", "AP"), _percent),
    ("text R@1", ("metrics", "text_to_object", "category", "R@1"), _percent),
    ("text R@5", ("metrics", "text_to_object", "category", "R@5"), _percent),
    ("text R@10", ("metrics", "text_to_object", "category", "R@10"), _percent),
    ("text mAP", ("metrics", "text_to_object", "category", "mAP@100"), _percent),
    ("attr R@1", ("metrics", "text_to_object", "attribute", "R@1"), _percent),
    ("attr mAP", ("metrics", "text_to_object", "attribute", "mAP@100"), _percent),
    ("ref R@1", ("metrics", "text_to_object", "referring", "R@1"), _percent),
    ("ref mAP", ("metrics", "text_to_object", "referring", "mAP@100"), _percent),
    ("obj R@1", ("metrics", "object_to_object", "R@1"), _percent),
    ("obj mAP", ("metrics", "object_to_object", "mAP@100"), _percent),
    ("0-shot acc", ("metrics", "zero_shot_accuracy"), _percent),
    ("kNN purity", ("metrics", "knn_purity"), _percent),
    ("CIDEr-D", ("metrics", "caption_cider", "CIDEr-D"), _percent),
    ("index img/s", ("speed", "index_images_per_second"), _plain),
    ("query p50 ms", ("speed", "query_p50_ms"), _plain),
    ("query p95 ms", ("speed", "query_p95_ms"), _plain),
]

LEGEND = (
    "Metrics in % (CIDEr-D x 100). box AP / AP50 / APr / mask AP: COCOeval of the detections, each labelled with "
    "its nearest category name (APr: rare categories); ranked AP / AP50: each box with its 3 likeliest categories, "
    "scored detection score x softmax probability (DETR-style scoring; models with a trained temperature only). text: one query per category name; attr: per "
    "\"colour category\"; ref: per referring expression; a hit is a returned object with IoU >= 0.5 to a "
    "relevant one; R@K = queries with a hit in the top K, mAP over the top 100. obj: each ground-truth box as "
    "the query, same-category objects of other images relevant. 0-shot acc: ground-truth boxes classified by "
    "category name. kNN purity: same-category share of each box's 10 nearest boxes. index img/s: end to end "
    "(`objsearch index` pipeline); query ms: `search_text`, top 10, warm."
)


def _lookup(row: dict, path: KeyPath) -> float | None:
    value: Any = row
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if not isinstance(value, (int, float)) or math.isnan(value) or (path[0] == "metrics" and value < 0):
        return None
    return float(value)


def markdown_table(results: dict[str, Any]) -> str:
    """The comparison table: one row per model, one column per measure any model has."""
    rows = results["models"]
    columns = [c for c in COLUMNS if any(_lookup(row, c[1]) is not None for row in rows)]
    lines = ["| model | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = [fmt(v) if (v := _lookup(row, path)) is not None else "-" for _, path, fmt in columns]
        lines.append(f"| {row['model'].replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _dataset_line(dataset: dict[str, Any]) -> str:
    source = "synthetic shapes set" if dataset.get("source") == "synthetic" else f"`{dataset.get('source')}`"
    return (f"{source}, split `{dataset.get('split')}`: {dataset.get('images_measured')} images measured "
            f"(of {dataset.get('images')}), {dataset.get('annotations')} annotations in the split, "
            f"{dataset.get('categories')} categories")


def _machine_line(machine: dict[str, Any]) -> str:
    parts = [f"{machine.get('cpu_count')} CPUs ({machine.get('processor')})", f"Python {machine.get('python')}"]
    if machine.get("torch"):
        parts.append(f"torch {machine['torch']} ({machine.get('torch_threads')} threads)")
    parts.append(f"GPU: {machine.get('cuda') or 'none'}")
    return ", ".join(parts) + f"; {machine.get('platform')}"


def write_markdown(results: dict[str, Any], path: Path) -> None:
    """results.md: the command, data, date and machine, then the table and its legend."""
    text = "\n\n".join([
        "# objsearch bench coco-search",
        f"Command: `{results['command']}`",
        (f"Data: {_dataset_line(results['dataset'])}.  \nDate: {results['date']}.  \n"
         f"Machine: {_machine_line(results['machine'])}."),
        markdown_table(results),
        LEGEND,
    ])
    Path(path).write_text(text + "\n")


def plot_pr_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """pr_curve.png: interpolated precision against recall of the category-name text queries, one
    curve per model (the 101-point curve of ``objsearch.metrics.precision_recall_curve``)."""
    figure = Figure(figsize=(6.4, 4.8), layout="constrained")  # no pyplot: no global backend state
    axes = figure.subplots()
    for row in rows:
        category = row["metrics"].get("text_to_object", {}).get("category")
        if not category or "curve" not in category:
            continue
        precision, recall = category["curve"]
        axes.plot(recall, precision, label=f"{row['model']} (mAP {100 * category['mAP@100']:.1f})")
    axes.set(xlabel="recall", ylabel="interpolated precision", xlim=(0, 1), ylim=(0, 1.02),
             title="Text-to-object retrieval, category-name queries")
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(loc="best", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no category queries", ha="center", va="center")
    figure.savefig(path, dpi=120)
