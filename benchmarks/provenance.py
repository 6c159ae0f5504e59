"""Where a benchmark figure came from: the commit, the date and the command, recorded with the raw result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def commit() -> str:
    """The checked-out commit (with ``+dirty`` when the work tree has changes), or 'unknown'."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def write_result(path: Path, result: dict[str, Any], *, code: str | None = None) -> None:
    """``result`` as JSON at ``path``, with the command line, the commit (``code``: the one taken
    with ``commit()`` when the run started; commits made while it ran are not its code), the date
    and the CPU count."""
    record = {"command": "python -m " + " ".join([_module_name()] + sys.argv[1:]), "commit": code or commit(), "date": utc_now(),
              "cpu_count": os.cpu_count(), **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def report(path: Path, result: dict[str, Any], *, code: str | None = None) -> None:
    """``write_result``, then the result printed as JSON (what a benchmark shows its user)."""
    write_result(path, result, code=code)
    print(json.dumps(result, indent=2))


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else sys.argv[0]
