"""Signal handlers installed for the length of a ``with`` block, then put back.

Python delivers signals to the main thread only, so elsewhere nothing is installed and the
block runs as it would have. Used for a record's graceful stop (record.py), a sweep's clean
stop (workers.py) and a recovery's deadline (watchdog.py).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

Handler = Callable[[int, Any], None]


@contextlib.contextmanager
def handling(handlers: dict[signal.Signals, Handler]) -> Iterator[bool]:
    """Install ``handlers`` inside; yields whether they were installed (only in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
