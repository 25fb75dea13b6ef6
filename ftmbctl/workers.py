"""The worker processes of a crash sweep, and what they leave behind when the sweep is stopped.

- ``interruptible()``: while a sweep runs, SIGINT and SIGTERM raise ``Interrupted`` in the main
  thread (exit 130 or 143), so the sweep stops its workers and removes its scratch directory
  instead of dying with them running (``stop_pool``).
- ``exit_with_parent()``: a worker whose parent died without a word (SIGKILL) notices within half
  a second and exits; nothing else would end it.
- ``scratch_dir()``: the sweep's scratch directory carries its pid, and every worker's scratch
  lives inside it. A SIGKILLed sweep cannot remove its own, so the next sweep removes those whose
  process is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from ftmbctl.errors import Interrupted
from ftmbctl.signals import handling

PARENT_POLL_S = 0.5  # how often a worker looks whether its parent is still there
STOP_WAIT_S = 5.0  # how long stopping waits for terminated workers to go before killing them
SCRATCH_PREFIX = "ftmbctl-recover-"


@contextlib.contextmanager
def interruptible(what: str) -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Interrupted`` inside (once: a second signal while the first is
    being handled is ignored, so the clean-up runs to its end). Outside the main thread, where
    Python cannot install handlers, nothing changes."""
    fired: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        if fired:
            return
        fired.append(signum)
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}: {what}", signum)

    with handling({signal.SIGINT: handler, signal.SIGTERM: handler}):
        yield


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (SIGTERM, then SIGKILL after
    STOP_WAIT_S), waiting until they are gone: no worker outlives the sweep."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + STOP_WAIT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def exit_with_parent() -> None:
    """In a worker: exit as soon as the process that started it is gone (its parent pid changes
    when it dies). Its scratch, inside the sweep's, goes with that (``remove_stale_scratch``).
    The parent's pid comes from multiprocessing, not from getppid() here: a parent killed while
    this worker was still importing would otherwise leave it watching its new parent, init."""
    started_by = multiprocessing.parent_process()
    parent = started_by.pid if started_by is not None and started_by.pid is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_scratch(base: str | None = None) -> None:
    """Remove this user's ``ftmbctl-recover-<pid>-*`` directories whose sweep process is gone
    (it was SIGKILLed: nothing else leaves one behind). A reused pid only keeps one a while longer."""
    base = base or tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            pid = entry.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
            if not entry.name.startswith(SCRATCH_PREFIX) or not pid.isdigit():
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid() \
                        and not _alive(int(pid)):
                    shutil.rmtree(entry.path, ignore_errors=True)


def scratch_dir() -> Path:
    """A new scratch directory ``ftmbctl-recover-<pid>-XXXX`` in the temp directory, after
    removing the ones SIGKILLed sweeps left (``remove_stale_scratch``)."""
    remove_stale_scratch()
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
