"""Progress display for long steps that report no progress of their own."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def spinner(desc: str, enabled: bool = True) -> Iterator[None]:
    """Elapsed-time spinner for work that reports no progress of its own."""
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    stop = threading.Event()
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed")

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        bar.close()
