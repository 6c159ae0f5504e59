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
# Where each package keeps its photos, inside its installed folder.
PACKAGE_PHOTO_DIRS = {"skimage": "data", "matplotlib": "mpl-data/sample_data", "sklearn": "datasets/images"}


def package_dir(name: str) -> Path | None:
    """The folder of an installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_photo_sources() -> dict[str, Path]:
    """Destination file name -> source path, for every sample photo installed on this machine."""
    sources: dict[str, Path] = {}
    for package, names in (("skimage", SKIMAGE_PHOTOS), ("matplotlib", MATPLOTLIB_PHOTOS)):
        folder = package_photo_dir(package)
        if folder:
            sources.update({f"{package}-{n}": folder / n for n in names})
    darknet = darknet_dir()
    if darknet:
        sources.update({f"darknet-{n}": darknet / n for n in DARKNET_PHOTOS})
    return {name: path for name, path in sources.items() if path.is_file()}


def package_photo_dir(package: str) -> Path | None:
    """The folder of ``package``'s photos (PACKAGE_PHOTO_DIRS), or None when it is not installed."""
    folder = package_dir(package)
    return folder / PACKAGE_PHOTO_DIRS[package] if folder else None


def data_dir(env: str, defaults) -> Path | None:
    """The folder named by the environment variable ``env``, else the first of ``defaults`` that
    exists; None when none does."""
    return next((Path(d) for d in (os.environ.get(env, ""), *defaults) if d and Path(d).is_dir()), None)


def darknet_dir() -> Path | None:
    """Debian darknet's data folder: ``$OBJSEARCH_DARKNET_DATA``, else DARKNET_DIRS; None when absent."""
    return data_dir(DARKNET_ENV, DARKNET_DIRS)


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
