"""The per-point deadline (watchdog.py) on and off the main thread: a middlebox stuck in a loop,
in io or in a queue's greenlet, ends with RecoveryTimeout in io; a block that ends in time is
never interrupted afterwards; a middlebox's `except Exception` cannot swallow it."""

from __future__ import annotations

import threading
import time

import pytest

from ftmbctl.scheduler import ChaosScheduler
from ftmbctl.watchdog import RecoveryTimeout, deadline


def in_a_thread(body) -> list[BaseException]:
    caught: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except RecoveryTimeout as exc:
            caught.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the deadline did not end the loop"
    return caught


def loop_forever() -> None:
    while True:
        try:
            time.sleep(0.001)
        except Exception:  # noqa: BLE001 - a middlebox that swallows everything it can
            pass


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_loop_in_a_queues_greenlet_ends_in_io(where: str) -> None:
    def body() -> None:
        sched = ChaosScheduler(2, seed=1)
        sched.start(lambda q, item: loop_forever() if q == 1 else None, lambda q: None)
        sched.dispatch(0, [1])
        sched.dispatch(1, [1])
        try:
            with deadline(0.3, lambda: sched.threads):
                sched.stop()
        finally:
            sched.abort()

    if where == "main":
        with pytest.raises(RecoveryTimeout) as caught:
            body()
        found = [caught.value]
    else:
        found = in_a_thread(body)
    assert len(found) == 1 and found[0].seconds == 0.3 and "0.3 s" in str(found[0])


def test_off_the_main_thread_a_loop_in_io_ends_too() -> None:
    def body() -> None:
        with deadline(0.2, lambda: []):
            loop_forever()

    assert len(in_a_thread(body)) == 1


def test_a_block_that_ends_in_time_is_not_interrupted_later() -> None:
    def body() -> None:
        with deadline(0.05, lambda: []):
            pass
        time.sleep(0.3)  # past the deadline: nothing may be raised here
        with deadline(0.3, lambda: []):
            time.sleep(0.01)
        time.sleep(0.4)

    assert in_a_thread(body) == []
