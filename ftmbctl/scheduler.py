"""The two record schedulers (DESIGN §4): real OS threads, and seeded chaos.

Both run one worker per queue and let the caller's thread act as the Input Logger / master
("io"). They share an interface: ``start(process, on_idle)``, ``dispatch(q, items)``,
``drain()``, ``stop()``, ``point(q)`` (a scheduling point, called before every shared access and
after every packet), ``handoff`` (None, or called after a queue's log is flushed), ``now_ns()``.

``ChaosScheduler`` lets exactly one actor (a worker or io) run at a time. At every scheduling
point a seeded RNG picks who runs next among the actors that can run, and simulated time moves
on by a seeded jitter, so one seed gives one interleaving and byte-identical files. Each worker
is a greenlet (a coroutine with its own stack, so a middlebox call can stop in the middle of a
packet) on the caller's thread, which is io: a hand-over is a stack switch of well under a
microsecond, where handing a baton between OS threads cost a kernel wake-up of 50-160 µs.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections import deque
from typing import Any, Callable

import greenlet

from ftmbctl.hashing import hash64

Process = Callable[[int, Any], None]
OnIdle = Callable[[int], None]


class ReplayStalled(RuntimeError):
    """No actor can run, and nothing can be given up to let one run."""


class _WorkerFailed(Exception):
    """Raised on io's side when a worker's middlebox call raised."""


class ThreadsScheduler:
    """Real threads and real locks: real, unrepeatable interleavings."""

    name = "threads"
    deterministic = False

    def __init__(self, queues: int, seed: int = 0) -> None:
        self.queues = queues
        self.inboxes: list[deque[Any]] = [deque() for _ in range(queues)]
        self.idle = [True] * queues
        self.cond = threading.Condition()
        self.stopping = False
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []

    point = None  # no scheduling points: the OS decides
    sched_point_for = staticmethod(lambda q: None)

    @staticmethod
    def handoff() -> None:
        """Offer the interpreter to another thread, right after this one flushed its log.

        Only one thread runs Python at a time. One that the interpreter switches out (every
        5 ms, at any bytecode) stops with the records it has not flushed yet, and every output
        whose dependency vector covers them, which with shared state is most outputs of every
        queue, waits until it runs again: that was most of the release delay. Yielding here
        makes switches happen where the yielding worker holds no such record.
        """
        os.sched_yield()

    def now_ns(self) -> int:
        return time.time_ns()

    def reseed(self, number: int) -> None:
        """Nothing to reseed: threads are not reproducible."""

    def start(self, process: Process, on_idle: OnIdle) -> None:
        for q in range(self.queues):
            thread = threading.Thread(target=self._run, args=(q, process, on_idle), name=f"queue-{q}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, q: int, process: Process, on_idle: OnIdle) -> None:
        inbox = self.inboxes[q]
        cond = self.cond
        try:
            while True:
                if not inbox:
                    on_idle(q)
                    with cond:
                        if not inbox:
                            self.idle[q] = True
                            cond.notify_all()
                        while not inbox and not self.stopping:
                            cond.wait()
                        if not inbox:
                            return
                        self.idle[q] = False
                process(q, inbox.popleft())
        except BaseException as exc:  # a middlebox bug: stop the run and report it on io's side
            with cond:
                self.error = exc
                self.idle[q] = True
                cond.notify_all()

    def dispatch(self, q: int, items: list[Any]) -> None:
        with self.cond:
            self.inboxes[q].extend(items)
            self.idle[q] = False
            self.cond.notify_all()

    def drain(self) -> None:
        with self.cond:
            while not self.error and not all(self.idle[q] and not self.inboxes[q] for q in range(self.queues)):
                self.cond.wait()
        self._check()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join()
        self._check()

    def abort(self) -> None:
        """End the workers without processing what is queued (the run is being discarded)."""
        with self.cond:
            for inbox in self.inboxes:
                inbox.clear()
            self.stopping = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join()

    def io_point(self) -> None:
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise _WorkerFailed() from self.error


class ChaosScheduler:
    """One actor at a time; a seeded choice at every scheduling point; simulated time."""

    name = "chaos"
    deterministic = True
    handoff = None  # who runs next is the seeded choice at scheduling points only

    def __init__(self, queues: int, seed: int, sticky: bool = False) -> None:
        # sticky: an actor keeps the baton until it must wait. Any order of free accesses is a
        # correct recovery, and this one switches least: recovery uses it.
        self.sticky = sticky
        self.queues = queues
        self.io = queues  # actor number of io: the greenlet that called start()
        self.seed = seed
        self.rng = random.Random(seed)
        self.draw = self.rng.random  # random() is several times cheaper than randrange(), and as seeded
        self._ready: list[int] | None = None  # the candidates while no condition decides them (point)
        self.actors: list[greenlet.greenlet | None] = [None] * (queues + 1)
        self.inboxes: list[deque[Any]] = [deque() for _ in range(queues)]
        self.parked = [True] * queues
        self.waiting: list[Callable[[], bool] | None] = [None] * queues
        self.done = [False] * queues
        self.alive = 0
        self.stopping = False
        self.io_wait: Callable[[], bool] | None = None
        self.error: BaseException | None = None
        self.aborted = False
        self.now = 0
        self.threads: list[threading.Thread] = []  # none: every actor runs on the caller's thread
        self.on_stall: Callable[[], bool] | None = None  # recovery: give up forcing the order
        self.describe: Callable[[int], str] | None = None  # recovery: where a queue is, what it waits for
        self.reseed(0)

    def now_ns(self) -> int:
        return self.now

    def advance_to(self, ts_ns: int) -> None:
        """Simulated time never runs behind the trace."""
        if ts_ns > self.now:
            self.now = ts_ns

    def reseed(self, number: int) -> None:
        """Restart the schedule from (seed, snapshot number): equal states stay equal from here."""
        self.rng.seed(hash64(f"chaos:{self.seed}:{number}".encode()))

    def sched_point_for(self, q: int) -> Callable[[], None]:
        return functools.partial(self.point, q)  # a C-level call: one less Python frame per access

    # ---- the baton ----
    # A worker is "parked" when it waits for work at the top of its loop (the state it starts in).
    # Any other worker is in the middle of something and can run, unless it waits for a condition
    # (replay: a variable reaching a sequence number), in which case it can run once that holds.
    # Snapshots are taken with every worker parked, so the schedule after a reseed depends only on
    # the state and the inputs: that is what lets a recovery reproduce the failure-free run.
    def _runnable(self, actor: int) -> bool:
        if actor == self.io:
            return self.io_wait is None or self.io_wait()
        if self.done[actor]:
            return False
        if self.parked[actor]:
            return bool(self.inboxes[actor]) or self.stopping
        waiting = self.waiting[actor]
        return waiting is None or waiting()

    def _pick(self, me: int, include_me: bool) -> int:
        draw = self.draw
        self.now += 200 + int(draw() * 1800)
        # _runnable inlined over the workers (this runs at every shared access), then io; the
        # candidates stay in actor order, so the seeded choice is the same as through _runnable
        choices = []
        done, parked, inboxes, waiting, stopping = self.done, self.parked, self.inboxes, self.waiting, self.stopping
        for actor in range(self.queues):
            if actor == me:
                if include_me:
                    choices.append(actor)
            elif done[actor]:
                continue
            elif parked[actor]:
                if inboxes[actor] or stopping:
                    choices.append(actor)
            else:
                condition = waiting[actor]
                if condition is None or condition():
                    choices.append(actor)
        io = self.io
        if (io == me and include_me) or (io != me and (self.io_wait is None or self.io_wait())):
            choices.append(io)
        if include_me and choices and self.io_wait is None and not any(waiting):  # no condition decided it
            self._ready = choices
        if not choices:
            # A replay whose middlebox skipped a logged access leaves its waiters waiting forever:
            # on_stall names the access and stops forcing the order, which lets them run again.
            if self.on_stall is not None and self.on_stall():
                return self._pick(me, include_me)
            raise ReplayStalled(self._stalled())
        return choices[int(draw() * len(choices))]

    def _stalled(self) -> str:
        return "no queue can run: " + "; ".join(self.positions())

    def positions(self) -> list[str]:
        """Where each queue is, in words: a stalled replay is reported with these."""
        parts = []
        for q in range(self.queues):
            where = self.describe(q) if self.describe is not None else f"queue {q}"
            if self.done[q]:
                where += " has ended"
            elif self.parked[q]:
                where += " has no input left"
            parts.append(where)
        return parts

    def point(self, me: int) -> None:
        """A scheduling point of a running actor: the seeded choice of who runs next, ``me`` included.

        Between changes of who can run at all (a dispatch, a worker parking or ending, a condition
        set or cleared) the candidates are the same list at every point, so it is kept rather than
        rebuilt: this runs at every shared access. The draws and the list are those of ``_pick``.
        """
        if self.sticky:
            return
        ready = self._ready
        if ready is None:
            nxt = self._pick(me, True)
        else:
            draw = self.draw
            self.now += 200 + int(draw() * 1800)
            nxt = ready[int(draw() * len(ready))]
        if nxt != me:
            self.actors[nxt].switch()

    def wait_until(self, me: int, condition: Callable[[], bool]) -> None:
        """Let others run until ``condition()`` holds (a worker waiting for its turn on a variable)."""
        if condition():
            return
        self.waiting[me] = condition
        self._ready = None
        self._block(me)
        self.waiting[me] = None
        self._ready = None

    def _block(self, me: int) -> None:
        self.actors[self._pick(me, False)].switch()

    # ---- workers ----
    # Each queue is a greenlet on the caller's thread: a hand-over is a switch of stacks, with no
    # lock, no kernel wake-up and no GIL hand-over in between. A worker's greenlet starts the first
    # time the baton reaches it (its parent is io, where an uncaught end would return to).
    def start(self, process: Process, on_idle: OnIdle) -> None:
        io = greenlet.getcurrent()
        self.actors[self.io] = io
        self.alive = self.queues
        for q in range(self.queues):
            self.actors[q] = greenlet.greenlet(functools.partial(self._run, q, process, on_idle), parent=io)

    def _run(self, q: int, process: Process, on_idle: OnIdle, *_sent: Any) -> None:
        inbox = self.inboxes[q]
        try:
            while True:
                self.parked[q] = False
                if inbox:
                    process(q, inbox.popleft())
                    if inbox:  # between two packets; after the last one the idle path below decides
                        self.point(q)
                    continue
                if self.stopping:
                    self.done[q] = True
                    self.alive -= 1
                    self._ready = None
                    # ending returns to the parent: make that the next actor
                    greenlet.getcurrent().parent = self.actors[self._pick(q, False)]
                    return
                on_idle(q)
                self.parked[q] = True
                self._ready = None
                self._block(q)
        except (_Abort, greenlet.GreenletExit):
            return
        except BaseException as exc:  # a middlebox bug, or an interrupt: io reports it (_check)
            if self.aborted:  # the run was given up (a recovery past its deadline): no one waits for it
                return
            self.error = exc
            self.done[q] = True
            self.alive -= 1
            self._ready = None
            greenlet.getcurrent().parent = self.actors[self.io]  # ending returns there

    # ---- io ----
    def io_point(self) -> None:
        """io's scheduling point after each input packet: ``point(io)``, inlined (one per packet)."""
        if not self.sticky:
            ready = self._ready
            if ready is None:
                nxt = self._pick(self.io, True)
            else:
                draw = self.draw
                self.now += 200 + int(draw() * 1800)
                nxt = ready[int(draw() * len(ready))]
            if nxt != self.io:
                self.actors[nxt].switch()
        if self.error is not None:
            self._check()

    def _io_wait_until(self, predicate: Callable[[], bool]) -> None:
        self.io_wait = lambda: predicate() or self.error is not None
        self._ready = None
        while not self.io_wait():
            self._block(self.io)
        self.io_wait = None
        self._ready = None
        self._check()

    def dispatch(self, q: int, items: list[Any]) -> None:
        self.inboxes[q].extend(items)
        self._ready = None

    def drain(self) -> None:
        self._io_wait_until(lambda: all(self.parked) and not any(self.inboxes))

    def stop(self) -> None:
        self.drain()
        self.stopping = True
        self._ready = None
        self._io_wait_until(lambda: self.alive == 0)

    def abort(self) -> None:
        """End every worker where it stands; called by io, which holds the baton."""
        if self.aborted:
            return
        self.aborted = True
        self._ready = None
        me = greenlet.getcurrent()
        for q, actor in enumerate(self.actors[:self.queues]):
            if actor is None or actor.dead or actor is me:
                continue
            if not actor:  # never started: nothing of it runs
                self.actors[q] = None
                continue
            actor.parent = me
            actor.throw(_Abort())

    def _check(self) -> None:
        error = self.error
        if error is not None:
            self.abort()
            if isinstance(error, ReplayStalled) or not isinstance(error, Exception):
                raise error  # the schedule's own failure, or an interrupt: not the middlebox's doing
            raise _WorkerFailed() from error


class _Abort(BaseException):
    """Ends a parked chaos worker after the run failed."""


def make_scheduler(name: str, queues: int, seed: int) -> ThreadsScheduler | ChaosScheduler:
    if name == "threads":
        return ThreadsScheduler(queues, seed)
    return ChaosScheduler(queues, seed)


WorkerFailed = _WorkerFailed
