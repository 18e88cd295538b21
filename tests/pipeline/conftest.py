"""Fixtures shared by the tests of the runtime's core modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline import transport


@pytest.fixture
def no_leaked_sockets() -> Iterator[None]:
    """Fails a test that leaves a ZeroMQ socket open (and closes them, so the next test
    starts clean); use with ``pytestmark = pytest.mark.usefixtures("no_leaked_sockets")``."""
    yield
    left = transport.open_sockets()
    for s in left:
        s.close(linger=0)
    transport.shutdown()
    assert not left, f"test leaked {len(left)} socket(s)"
