"""Under CI=true a missing service fails the run instead of skipping it (tests/conftest.py's
``require``); without CI it skips with the reason.

The proof runs pytest in a child process on one Redis test with redis-server made unavailable.
A PATH without it would not do: ``tests/sinks/redis_server.py`` looks at /usr/bin first (where
Debian's python3 also lives), so the child sets the module's resolved path to None before
pytest imports the sinks' conftest, which is what that module computes on a machine without
redis-server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REDIS_TEST = "tests/sinks/test_sink_redis.py::test_maxlen_trims_streams"
CHILD = f"""
import sys
sys.path.insert(0, {str(REPO / "tests" / "sinks")!r})
import redis_server
redis_server.REDIS_SERVER = None  # what it resolves to without redis-server installed
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _run_without_redis(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci:
        env["CI"] = "true"
    cmd = [sys.executable, "-c", CHILD, "-p", "no:cacheprovider", "-rA", REDIS_TEST]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [True, False], ids=["CI=true", "no-CI"])
def test_missing_redis_fails_under_ci_and_skips_otherwise(ci: bool) -> None:
    proc = _run_without_redis(ci)
    out = proc.stdout + proc.stderr
    summary = out.strip().splitlines()[-1]  # "===== 1 error in 1.43s ====="
    assert "redis-server not installed" in out, out[-3000:]
    if ci:
        assert proc.returncode == 1, out[-3000:]
        assert re.search(r"\b1 error in ", summary) and "skipped" not in summary, out[-3000:]
    else:
        assert proc.returncode == 0, out[-3000:]
        assert re.search(r"\b1 skipped in ", summary), out[-3000:]
