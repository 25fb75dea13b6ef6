"""The two record schedulers (DESIGN §4): real OS threads, and seeded chaos.

Both run one worker per queue and let the caller's thread act as the Input Logger / master
("io"). They share an interface: ``start(process, on_idle)``, ``dispatch(q, items)``,
``drain()``, ``stop()``, ``point(q)`` (a scheduling point, called before every shared access and
after every packet), ``handoff`` (None, or called after a queue's log is flushed), ``now_ns()``.

``ChaosScheduler`` lets exactly one actor (a worker or io) run at a time. At every scheduling
point a seeded RNG picks who runs next among the actors that can run, and simulated time moves
on by a seeded jitter, so one seed gives one interleaving and byte-identical files. Actors are
still OS threads (each middlebox call must be able to stop in the middle of a packet), but a
baton of per-actor locks makes the hand-over explicit: nothing runs concurrently.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections import deque
from typing import Any, Callable

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
        # correct recovery, and this one switches threads least: recovery uses it.
        self.sticky = sticky
        self.queues = queues
        self.io = queues  # actor number of the io/master thread
        self.seed = seed
        self.rng = random.Random(seed)
        self.gates = [threading.Lock() for _ in range(queues + 1)]
        for gate in self.gates:
            gate.acquire()
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
        self.threads: list[threading.Thread] = []
        self.on_stall: Callable[[], bool] | None = None  # recovery: give up forcing the order
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
        draw = self.rng.random  # random() is several times cheaper than randrange(), and as seeded
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
        if not choices:
            # A replay whose middlebox skipped a logged access leaves its waiters waiting forever:
            # on_stall names the access and stops forcing the order, which lets them run again.
            if self.on_stall is not None and self.on_stall():
                return self._pick(me, include_me)
            raise ReplayStalled("no queue can run: the replay waits for an access no queue makes")
        return choices[int(draw() * len(choices))]

    def _switch(self, me: int, nxt: int) -> None:
        self.gates[nxt].release()
        self.gates[me].acquire()
        if self.aborted and me != self.io:
            raise _Abort()

    def point(self, me: int) -> None:
        if self.sticky:
            return
        nxt = self._pick(me, True)
        if nxt != me:
            self._switch(me, nxt)

    def wait_until(self, me: int, condition: Callable[[], bool]) -> None:
        """Let others run until ``condition()`` holds (a worker waiting for its turn on a variable)."""
        if condition():
            return
        self.waiting[me] = condition
        self._block(me)
        self.waiting[me] = None

    def _block(self, me: int) -> None:
        self._switch(me, self._pick(me, False))

    # ---- workers ----
    def start(self, process: Process, on_idle: OnIdle) -> None:
        self.alive = self.queues
        for q in range(self.queues):
            thread = threading.Thread(target=self._run, args=(q, process, on_idle), name=f"chaos-{q}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, q: int, process: Process, on_idle: OnIdle) -> None:
        inbox = self.inboxes[q]
        try:
            self.gates[q].acquire()
            if self.aborted:
                return
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
                    self.gates[self._pick(q, False)].release()
                    return
                on_idle(q)
                self.parked[q] = True
                self._block(q)
        except _Abort:
            return
        except BaseException as exc:  # a middlebox bug: hand the baton to io, which reports it
            if self.aborted:  # the run was given up (a recovery past its deadline): no one waits for it
                return
            self.error = exc
            self.done[q] = True
            self.alive -= 1
            self.gates[self.io].release()

    # ---- io ----
    def io_point(self) -> None:
        self.point(self.io)
        self._check()

    def _io_wait_until(self, predicate: Callable[[], bool]) -> None:
        self.io_wait = lambda: predicate() or self.error is not None
        while not self.io_wait():
            self._block(self.io)
        self.io_wait = None
        self._check()

    def dispatch(self, q: int, items: list[Any]) -> None:
        self.inboxes[q].extend(items)

    def drain(self) -> None:
        self._io_wait_until(lambda: all(self.parked) and not any(self.inboxes))

    def stop(self) -> None:
        self.drain()
        self.stopping = True
        self._io_wait_until(lambda: self.alive == 0)

    def abort(self) -> None:
        """Let every parked worker end; called by io, which holds the baton."""
        if not self.aborted:
            self.aborted = True
            for q in range(self.queues):
                if not self.done[q]:
                    self.gates[q].release()

    def _check(self) -> None:
        if self.error is not None:
            self.abort()
            raise _WorkerFailed() from self.error


class _Abort(BaseException):
    """Ends a parked chaos worker after the run failed."""


def make_scheduler(name: str, queues: int, seed: int) -> ThreadsScheduler | ChaosScheduler:
    if name == "threads":
        return ThreadsScheduler(queues, seed)
    return ChaosScheduler(queues, seed)


WorkerFailed = _WorkerFailed
