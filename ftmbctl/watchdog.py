"""A deadline for one recovery: a middlebox that never returns must not hang a sweep (DESIGN §7).

A recovery runs its queues as greenlets on the main thread of the process that checks the crash
point (scheduler.py); the greenlet that set the deadline is the Input Logger. When the deadline
passes, SIGALRM interrupts whichever greenlet runs: ``RecoveryTimeout`` is raised in the one that
set the deadline, switching to it if a queue's middlebox call was running (that queue stays
where it was until the recovery is aborted). Queues that are OS threads (named by ``threads``)
get ``RecoveryTimeout`` raised at their next bytecode (CPython's ``PyThreadState_SetAsyncExc``).
Either way a middlebox stuck in a Python loop ends and the process goes on with the next crash
point. A call blocked in C (a ``time.sleep`` of an hour) ends when that call returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from typing import Callable, Iterator

import greenlet

from ftmbctl.signals import handling


class RecoveryTimeout(Exception):
    """A recovery did not finish before its deadline."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(f"did not finish within {seconds:g} s")
        self.seconds = seconds


def _raise_in(thread: threading.Thread) -> None:
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(RecoveryTimeout))


@contextlib.contextmanager
def deadline(seconds: float | None, threads: Callable[[], list[threading.Thread]]) -> Iterator[None]:
    """Raise ``RecoveryTimeout`` in this thread, and in each of ``threads()``, ``seconds`` from now.

    Only the main thread receives signals: elsewhere (or with no ``seconds``) there is no deadline.
    """
    owner = greenlet.getcurrent()

    def expire(_signum: int, _frame: object) -> None:
        for thread in threads():
            if thread is not threading.current_thread():
                _raise_in(thread)
        if greenlet.getcurrent() is not owner:  # a queue's greenlet was running: end the wait in io
            owner.throw(RecoveryTimeout(seconds))
        raise RecoveryTimeout(seconds)

    if not seconds:
        yield
        return
    with handling({signal.SIGALRM: expire}) as installed:
        if installed:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            if installed:
                signal.setitimer(signal.ITIMER_REAL, 0)
