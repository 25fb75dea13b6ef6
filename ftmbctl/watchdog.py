"""A deadline for one recovery: a middlebox that never returns must not hang a sweep (DESIGN §7).

A recovery runs its queues as greenlets on the thread of the process that checks the crash
point; the greenlet that set the deadline is the Input Logger. When the deadline passes,
``RecoveryTimeout`` is raised in whichever greenlet runs on that thread, and a queue's greenlet
hands it to io unwrapped (scheduler.py), so it ends the recovery however deep in the middlebox
it lands. On the main thread SIGALRM delivers it (switching to io if a queue's middlebox call was
running); on another thread (a Dask worker runs tasks on a pool of threads) a timer thread
raises it at the thread's next bytecode (CPython's ``PyThreadState_SetAsyncExc``), as it does in
any other OS thread the recovery names (``threads``). Either way a middlebox stuck in a Python
loop ends and the process goes on with the next crash point. A call blocked in C (a
``time.sleep`` of an hour) ends when that call returns. ``RecoveryTimeout`` is a BaseException:
a middlebox's ``except Exception`` cannot swallow it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from typing import Callable, Iterator

import greenlet

from ftmbctl.signals import handling


class RecoveryTimeout(BaseException):
    """A recovery did not finish before its deadline."""

    seconds = 0.0

    def __init__(self, seconds: float | None = None) -> None:
        if seconds is not None:
            self.seconds = seconds
        super().__init__(f"did not finish within {self.seconds:g} s")


def _raise_in(thread: threading.Thread, kind: type[BaseException] = RecoveryTimeout) -> None:
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(kind))


def _withdraw(thread: threading.Thread) -> None:
    """Take back an exception _raise_in set and the thread has not raised yet."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), None)


@contextlib.contextmanager
def deadline(seconds: float | None, threads: Callable[[], list[threading.Thread]]) -> Iterator[None]:
    """Raise ``RecoveryTimeout`` in this thread, and in each of ``threads()``, ``seconds`` from now
    (no deadline without ``seconds``)."""
    if not seconds:
        yield
        return
    owner = greenlet.getcurrent()
    here = threading.current_thread()
    # raised asynchronously, the exception is made from its class: one that knows its seconds
    timeout = type("RecoveryTimeout", (RecoveryTimeout,), {"seconds": seconds, "__module__": __name__})

    def others() -> None:
        for thread in threads():
            if thread is not threading.current_thread() and thread is not here:
                _raise_in(thread, timeout)

    def expire(_signum: int, _frame: object) -> None:
        others()
        if greenlet.getcurrent() is not owner:  # a queue's greenlet was running: end the wait in io
            owner.throw(timeout())
        raise timeout()

    with handling({signal.SIGALRM: expire}) as installed:
        if installed:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            return
        # No signals off the main thread: a timer thread raises it here instead.
        state = threading.Lock()
        fired: list[bool] = []

        def fire() -> None:
            with state:
                if fired:  # the block has ended
                    return
                fired.append(True)
                others()
                _raise_in(here, timeout)

        timer = threading.Timer(seconds, fire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            with state:
                timer.cancel()
                if fired:  # raised, and maybe not delivered yet: never after the block
                    _withdraw(here)
                fired.append(True)
