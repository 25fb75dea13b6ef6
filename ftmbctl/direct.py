"""Run a middlebox directly, single-threaded and un-instrumented: for functional tests and for
checking a middlebox's own behaviour without any FTMB machinery in the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ftmbctl.context import LiveSource, VanillaContext
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


def run_direct(middlebox: Middlebox, packets: Iterable[Packet], queues: int = 1,
               clock_ns: Callable[[], int] | None = None, seed: int = 0) -> DirectRun:
    """Process ``packets`` in order, each on its flow's queue. The clock defaults to pcap time."""
    run = DirectRun()
    middlebox.declare(run.shared)
    run.local = [middlebox.new_local_state() for _ in range(queues)]
    current: list[Packet] = []
    clock = clock_ns or (lambda: current[0].ts_ns if current else 0)
    contexts = [VanillaContext(q, run.local[q], LiveSource(clock, seed * 1000 + q)) for q in range(queues)]
    for pkt in packets:
        current[:] = [pkt]
        ctx = contexts[flow_queue(pkt.linktype, pkt.data, queues)]
        ctx.packet = pkt
        ctx.outputs = []
        middlebox.process(ctx, pkt)
        run.outputs[pkt.id] = ctx.outputs
    return run
