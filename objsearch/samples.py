"""Real sample photos that ship inside installed packages, gathered into one folder.

Nothing is downloaded and no photo is committed to this repository: the files are copied from
scikit-image's and matplotlib's data folders and, where present, from Debian's ``darknet``
package (``/usr/share/darknet/data`` or an unpacked copy named by ``$OBJSEARCH_DARKNET_DATA``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

# Photos of everyday objects; the scientific images of these packages are left out.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
DARKNET_PHOTOS = ("dog.jpg", "horses.jpg", "giraffe.jpg", "person.jpg", "kite.jpg", "eagle.jpg", "scream.jpg")
DARKNET_DIRS = ("/usr/share/darknet/data",)
DARKNET_ENV = "OBJSEARCH_DARKNET_DATA"


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_photo_sources() -> dict[str, Path]:
    """Destination file name -> source path, for every sample photo installed on this machine."""
    sources: dict[str, Path] = {}
    skimage = package_dir("skimage")
    if skimage:
        sources.update({f"skimage-{n}": skimage / "data" / n for n in SKIMAGE_PHOTOS})
    matplotlib = package_dir("matplotlib")
    if matplotlib:
        sources.update({f"matplotlib-{n}": matplotlib / "mpl-data" / "sample_data" / n for n in MATPLOTLIB_PHOTOS})
    darknet = darknet_dir()
    if darknet:
        sources.update({f"darknet-{n}": darknet / n for n in DARKNET_PHOTOS})
    return {name: path for name, path in sources.items() if path.is_file()}


def darknet_dir() -> Path | None:
    """Debian darknet's data folder: ``$OBJSEARCH_DARKNET_DATA``, else DARKNET_DIRS; None when absent."""
    candidates = [os.environ.get(DARKNET_ENV, ""), *DARKNET_DIRS]
    return next((Path(d) for d in candidates if d and Path(d).is_dir()), None)


def gather_sample_photos(dest: str | os.PathLike) -> list[Path]:
    """Copy the installed sample photos into ``dest`` (kept as they are); returns the copies."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for name, source in sorted(sample_photo_sources().items()):
        target = dest / name
        if not target.exists():
            shutil.copyfile(source, target)
        copies.append(target)
    logger.info("%d sample photos in %s", len(copies), dest)
    return copies
