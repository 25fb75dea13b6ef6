"""Run a middlebox directly, single-threaded and un-instrumented: for functional tests and for
checking a middlebox's own behaviour without any FTMB machinery in the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ftmbctl.context import ND_CLOCK, LiveSource, VanillaContext
from ftmbctl.flowhash import flow_queue
from ftmbctl.middlebox import Middlebox, Packet
from ftmbctl.shared import SharedState


@dataclass
class DirectRun:
    """The outcome of ``run_direct``: outputs per input id, and the state at the end."""

    outputs: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    shared: SharedState = field(default_factory=SharedState)
    local: list[dict[str, Any]] = field(default_factory=list)

    def all_outputs(self) -> list[bytes]:
        return [data for pid in sorted(self.outputs) for _lt, data in self.outputs[pid]]


class _DirectSource(LiveSource):
    """The clock is the packet's own timestamp (no jitter), or ``clock_ns()`` when given."""

    def __init__(self, seed: int, clock_ns: Callable[[], int] | None) -> None:
        super().__init__(seed)
        self.clock_ns = clock_ns

    def value(self, kind: int, ts_ns: int) -> int:
        if kind == ND_CLOCK:
            return self.clock_ns() if self.clock_ns is not None else ts_ns
        return self.rng.getrandbits(64)


def run_direct(middlebox: Middlebox, packets: Iterable[Packet], queues: int = 1,
               clock_ns: Callable[[], int] | None = None, seed: int = 0) -> DirectRun:
    """Process ``packets`` in order, each on its flow's queue. The clock defaults to pcap time."""
    run = DirectRun()
    middlebox.declare(run.shared)
    run.local = [middlebox.new_local_state() for _ in range(queues)]
    contexts = [VanillaContext(q, run.local[q], _DirectSource(seed * 1000 + q, clock_ns)) for q in range(queues)]
    for pkt in packets:
        ctx = contexts[flow_queue(pkt.linktype, pkt.data, queues)]
        ctx.packet = pkt
        ctx.outputs = []
        middlebox.process(ctx, pkt)
        run.outputs[pkt.id] = ctx.outputs
    return run
