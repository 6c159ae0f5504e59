"""The library never pulls in the applications built on it."""

import subprocess
import sys

from tests.conftest import REPO


def test_library_does_not_import_indexer_or_training():
    code = (
        "import sys, objsearch, objsearch.search, objsearch.embedders.bundled, objsearch.cli, objsearch.render;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('indexer', 'training', 'benchmarks')];"
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
