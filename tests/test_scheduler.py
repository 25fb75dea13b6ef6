"""The chaos scheduler as an engine: queues are coroutines on the caller's thread (DESIGN §4).

What records and recoveries rely on is tested through them (test_record, test_crash_verify,
test_exact_verification); here is what only the scheduler itself can show: who runs, what a
stalled replay says, how a failing or interrupted queue reaches io, and that nothing is left
running after an abort.
"""

from __future__ import annotations

import threading

import greenlet
import pytest

from ftmbctl.scheduler import ChaosScheduler, ReplayStalled, WorkerFailed


def run_items(sched: ChaosScheduler, work: dict[int, list], process) -> None:
    sched.start(process, lambda q: None)
    for q, items in work.items():
        sched.dispatch(q, items)
    sched.stop()


def test_queues_run_on_the_callers_thread_one_at_a_time():
    sched = ChaosScheduler(3, seed=5)
    seen: list[tuple[int, int, str]] = []
    running = []

    def process(q: int, item: int) -> None:
        running.append(q)
        assert len(running) == 1, "two queues ran at once"
        seen.append((q, item, threading.current_thread().name))
        running.pop()
        sched.point(q)

    run_items(sched, {0: [1, 2], 1: [3], 2: [4, 5, 6]}, process)
    assert sorted((q, i) for q, i, _ in seen) == [(0, 1), (0, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    assert {name for _, _, name in seen} == {threading.current_thread().name}
    assert sched.threads == []


def schedule(seed: int) -> list[tuple[int, int]]:
    """The order in which 3 queues, each making 4 accesses per item, interleave."""
    sched = ChaosScheduler(3, seed=seed)
    order: list[tuple[int, int]] = []

    def process(q: int, item: int) -> None:
        for step in range(4):
            sched.point(q)
            order.append((q, item * 10 + step))

    run_items(sched, {q: [1, 2, 3] for q in range(3)}, process)
    return order


def test_one_seed_one_interleaving_two_seeds_two():
    assert schedule(11) == schedule(11)
    assert schedule(11) != schedule(12)
    # a queue's own steps stay in its order whatever the interleaving
    mine = [step for q, step in schedule(12) if q == 1]
    assert mine == sorted(mine)


def test_a_stalled_replay_names_every_queue_and_what_it_waits_for():
    sched = ChaosScheduler(3, seed=1)
    sched.describe = lambda q: f"queue {q} at packet {100 + q}" + (" waits for access 7 to variable 2" if q < 2 else "")

    def process(q: int, _item: int) -> None:
        if q < 2:  # both wait for an access nobody makes
            sched.wait_until(q, lambda: False)

    sched.start(process, lambda q: None)
    for q in range(3):
        sched.dispatch(q, [0])
    with pytest.raises(ReplayStalled) as caught:
        sched.stop()
    message = str(caught.value)
    assert message.startswith("no queue can run: ")
    assert "queue 0 at packet 100 waits for access 7 to variable 2" in message
    assert "queue 1 at packet 101 waits for access 7 to variable 2" in message
    assert "queue 2 at packet 102 has no input left" in message
    sched.abort()
    assert all(actor is None or actor.dead for actor in sched.actors[:3])


def test_on_stall_may_give_up_and_let_the_waiters_go():
    sched = ChaosScheduler(2, seed=3)
    given_up = []

    def on_stall() -> bool:
        if given_up:
            return False
        given_up.append(True)
        return True

    sched.on_stall = on_stall
    finished = []

    def process(q: int, item: int) -> None:
        sched.wait_until(q, lambda: bool(given_up))
        finished.append(q)

    run_items(sched, {0: [0], 1: [0]}, process)
    assert sorted(finished) == [0, 1] and given_up == [True]


def test_a_failing_queue_reaches_io_with_its_exception():
    sched = ChaosScheduler(2, seed=2)

    def process(q: int, item: int) -> None:
        sched.point(q)
        if q == 1 and item == 2:
            raise ValueError("bad packet")

    with pytest.raises(WorkerFailed) as caught:
        run_items(sched, {0: [1, 2, 3], 1: [1, 2, 3]}, process)
    assert isinstance(caught.value.__cause__, ValueError)
    assert all(actor is None or actor.dead for actor in sched.actors[:2]), "a queue was left suspended"


def test_an_interrupt_in_a_queue_is_raised_in_io_as_it_is():
    sched = ChaosScheduler(2, seed=2)

    def process(q: int, item: int) -> None:
        if q == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_items(sched, {0: [1], 1: [1]}, process)


def test_abort_ends_queues_suspended_in_the_middle_of_a_packet():
    sched = ChaosScheduler(2, seed=4)
    cleaned = []

    def process(q: int, _item: int) -> None:
        try:
            sched.wait_until(q, lambda: False)
        finally:
            cleaned.append(q)

    sched.start(process, lambda q: None)
    sched.dispatch(0, [1])
    sched.dispatch(1, [1])
    sched.io_wait = lambda: len(sched.waiting) == 2 and all(sched.waiting)  # both are suspended
    sched._block(sched.io)
    sched.io_wait = None
    sched.abort()
    assert sorted(cleaned) == [0, 1]
    assert all(actor.dead for actor in sched.actors[:2])


def test_a_scheduler_runs_inside_another_greenlet():
    """io is whoever calls start(): a record driven from a coroutine works the same."""
    results = []

    def body() -> None:
        results.append(schedule(11))

    greenlet.greenlet(body).switch()
    assert results == [schedule(11)]


def test_a_stall_divergence_lists_where_every_queue_is():
    """When forcing is given up at a stall, the divergence verify reports says where each queue was."""
    from ftmbctl.records import PalRecord
    from ftmbctl.replay import ReplayPlan
    from ftmbctl.shared import Counter

    var = Counter("hits", 3)
    var.count = 4  # access 5 never comes
    waiting_entry = PalRecord(packet=40, var=3, seq=6, digest=None)
    plan = ReplayPlan([[PalRecord(packet=31, var=3, seq=5, digest=None)], [waiting_entry]], {3: 6})
    plan.waits[1] = (var, waiting_entry)
    plan.positions = lambda: ["queue 0 at packet 31 has no input left",
                              "queue 1 at packet 40 waits for access 6 to variable 3 (the variable is at access 4)"]
    assert plan.stall()
    [divergence] = plan.divergences
    assert (divergence.kind, divergence.queue, divergence.packet, divergence.seq) == ("stall", 0, 31, 5)
    assert "queue 0 at packet 31 has no input left" in divergence.got
    assert "queue 1 at packet 40 waits for access 6 to variable 3" in divergence.got
    assert not plan.forcing
