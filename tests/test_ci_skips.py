"""Under CI=true a skipped test fails the run; elsewhere it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

SKIPPING_TEST = "import pytest\n\ndef test_needs_something():\n    pytest.skip('something is missing')\n"
SKIPPED_MODULE = "import pytest\n\npytest.skip('no photos', allow_module_level=True)\n\ndef test_photos():\n    pass\n"


def run_pytest(folder, ci: str | None):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.skips_fail_in_ci", "-p", "no:cacheprovider", str(folder)],
                          capture_output=True, text=True, timeout=120, cwd=folder, env=env)


def test_a_skip_fails_under_ci_and_stays_a_skip_elsewhere(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TEST)
    in_ci = run_pytest(tmp_path, "true")
    assert in_ci.returncode == 1, in_ci.stdout
    assert "1 failed" in in_ci.stdout and "skipped under CI=true" in in_ci.stdout and "something is missing" in in_ci.stdout
    local = run_pytest(tmp_path, None)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout


def test_a_module_skipped_while_collecting_fails_under_ci(tmp_path):
    (tmp_path / "test_skipped_module.py").write_text(SKIPPED_MODULE)
    in_ci = run_pytest(tmp_path, "true")
    assert in_ci.returncode != 0 and "skipped under CI=true" in in_ci.stdout and "no photos" in in_ci.stdout, in_ci.stdout
    assert "1 skipped" in run_pytest(tmp_path, None).stdout
