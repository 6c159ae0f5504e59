"""A real-photo retrieval set: 20 photos that ship inside packages, and text and region queries with
boxes drawn by hand (``real_photos.json`` beside this module).

The photos are copied at run time from scikit-image, scikit-learn and matplotlib (objsearch's
``dev`` and ``demo`` extras install them), Debian's ``darknet`` package (``$OBJSEARCH_DARKNET_DATA``
or ``/usr/share/darknet/data``) and ultralytics' wheel (``$OBJSEARCH_ULTRALYTICS_WHEEL``: the .whl
file, or a folder holding one; only two JPEGs are read out of it, nothing is installed; `make test`
downloads it). None is committed to this repository.

A second, held-out set (``real_photos_held_out.json``: 12 photos of OpenCV's sample data, from
Debian's ``opencv-doc`` package, ``$OBJSEARCH_OPENCV_DATA`` or its examples/data folder; `make
opencv-photos` fetches it) was annotated after the bundled model it measures was fixed; each
function below takes the set's annotation file.

Query kinds: ``coco`` (a COCO label: "dog"), ``colour`` (a colour and a label: "white horse"),
``role`` (what a person is doing or is: "an astronaut"), ``beyond`` (objects without a COCO class:
"rocket"), ``small`` (small objects: "spoon", "sunglasses") and ``region`` (a box of one photo;
its relevant objects are in the other photos). Boxes are pixels, xyxy, of the upright photo. A
query lists every object of the set it should find.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from objsearch.errors import ObjsearchError
from objsearch.samples import DARKNET_ENV, darknet_dir, data_dir, package_photo_dir

ANNOTATIONS = Path(__file__).with_name("real_photos.json")
HELD_OUT = Path(__file__).with_name("real_photos_held_out.json")
OPENCV_ENV = "OBJSEARCH_OPENCV_DATA"
OPENCV_DIRS = ("/usr/share/doc/opencv-doc/examples/data",)
KINDS = ("coco", "colour", "role", "beyond", "small", "region")
COCO_VOCABULARY = ("coco", "colour", "role")  # queries about objects of COCO's classes
ULTRALYTICS_ENV = "OBJSEARCH_ULTRALYTICS_WHEEL"
ULTRALYTICS_VERSION = "8.4.190"  # the wheel `make test` downloads; another version is used if it is the one found


class MissingPhotos(ObjsearchError):
    """Some photos of the set are not installed on this machine."""


@dataclass(frozen=True)
class RealQuery:
    """One query: ``text``, or a ``box`` of ``image`` (a region query); ``relevant``: photo file
    name -> the (x1, y1, x2, y2) pixel boxes of every object the query should find there."""

    kind: str
    relevant: dict[str, list[tuple[float, float, float, float]]]
    text: str | None = None
    image: str | None = None
    box: tuple[float, float, float, float] | None = None

    @property
    def name(self) -> str:
        return self.text if self.text is not None else f"region {self.image} {list(self.box)}"


def load_queries(annotations: Path = ANNOTATIONS) -> list[RealQuery]:
    """The set's queries, each with its relevant objects resolved to boxes."""
    data = json.loads(annotations.read_text())
    queries = []
    for q in data["queries"]:
        relevant = q["relevant"] if isinstance(q["relevant"], dict) else data["objects"][q["relevant"]]
        queries.append(RealQuery(kind=q["kind"], text=q.get("text"), image=q.get("image"),
                                 box=tuple(q["box"]) if "box" in q else None,
                                 relevant={name: [tuple(b) for b in boxes] for name, boxes in relevant.items()}))
    return queries


@dataclass(frozen=True)
class DrawnMask:
    """An object's outline drawn by hand: ``polygon`` (x, y) pixel vertices; ``box`` its box."""

    photo: str
    object: str
    box: tuple[float, float, float, float]
    polygon: list[tuple[float, float]]

    def mask(self, height: int, width: int):
        """(height, width) bool array, True inside the polygon."""
        import numpy as np
        from PIL import Image, ImageDraw

        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in self.polygon], fill=1)
        return np.asarray(canvas).astype(bool)


def load_masks(annotations: Path = ANNOTATIONS) -> list[DrawnMask]:
    """The hand-drawn outlines of a few objects (to measure masks against)."""
    return [DrawnMask(m["photo"], m["object"], tuple(m["box"]), [tuple(p) for p in m["polygon"]])
            for m in json.loads(annotations.read_text())["masks"]]


def photo_names(annotations: Path = ANNOTATIONS) -> list[str]:
    return sorted(json.loads(annotations.read_text())["photos"])


def gather(dest: str | os.PathLike, annotations: Path = ANNOTATIONS) -> Path:
    """Copy the set's photos into ``dest`` (created; files already there are kept). Raises
    MissingPhotos naming every photo whose source is not installed, and where to get it."""
    dest = Path(dest)
    photos = json.loads(annotations.read_text())["photos"]
    missing = []
    dest.mkdir(parents=True, exist_ok=True)
    for name, (source, file_name) in sorted(photos.items()):
        if (dest / name).is_file():
            continue
        try:
            _copy(source, file_name, dest / name)
        except (FileNotFoundError, KeyError, zipfile.BadZipFile) as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        raise MissingPhotos(f"{len(missing)} photos of the real-photo set are not on this machine: {'; '.join(missing)}. "
                            "`make test` fetches Debian's darknet package and ultralytics' wheel, `make opencv-photos` "
                            f"OpenCV's sample data; or set ${DARKNET_ENV}, ${ULTRALYTICS_ENV} and ${OPENCV_ENV}")
    return dest


def _copy(source: str, file_name: str, target: Path) -> None:
    """Copy one photo to ``target`` whole or not at all (a file left there is taken as copied)."""
    if source == "ultralytics":
        wheel_path = _ultralytics_wheel()
        with zipfile.ZipFile(wheel_path) as wheel, wheel.open(f"ultralytics/assets/{file_name}") as member:
            data = member.read()
    else:
        folder = _source_folder(source)
        if not (folder / file_name).is_file():
            raise FileNotFoundError(f"no {file_name} in {folder}")
        data = (folder / file_name).read_bytes()
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)


def _source_folder(source: str) -> Path:
    if source == "darknet":
        folder = darknet_dir()
        if folder is None:
            raise FileNotFoundError(f"Debian's darknet data not found (apt-get install darknet, or set ${DARKNET_ENV})")
        return folder
    if source == "opencv":
        found = data_dir(OPENCV_ENV, OPENCV_DIRS)
        if found is None:
            raise FileNotFoundError(f"OpenCV's sample data not found (apt-get install opencv-doc, `make opencv-photos`, or set ${OPENCV_ENV})")
        return found
    folder = package_photo_dir(source)
    if folder is None:
        raise FileNotFoundError(f"the {source} package is not installed")
    return folder


def _ultralytics_wheel() -> Path:
    given = os.environ.get(ULTRALYTICS_ENV, "")
    path = Path(given) if given else None
    if path is not None and path.is_dir():
        wheels = sorted(path.glob(f"ultralytics-{ULTRALYTICS_VERSION}-*.whl")) or sorted(path.glob("ultralytics-*.whl"))
        path = wheels[0] if wheels else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"ultralytics' wheel not found (pip download --no-deps ultralytics, then set ${ULTRALYTICS_ENV})")
    return path
