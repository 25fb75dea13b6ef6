"""``ftmbctl export``: the released outputs of a run as a capture file tcpdump and tshark open.

Each output keeps its link type; its timestamp is its release time (simulated under the chaos
scheduler, wall clock under threads). One link type gives a classic pcap, several a pcapng.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ftmbctl.pcapio import RawPacket, write_pcap, write_pcapng
from ftmbctl.rundir import RunDir


def _packets(run: RunDir) -> Iterator[RawPacket]:
    for number, out in enumerate(run.outputs()):
        yield RawPacket(number, out.release_ns, out.linktype, len(out.data), out.data)


def export_outputs(run_dir: Path, dest: Path) -> tuple[int, str]:
    """Write every released output of ``run_dir`` to ``dest``; returns (packets, format)."""
    run = RunDir(run_dir)
    linktypes = {out.linktype for out in run.outputs()}
    if len(linktypes) <= 1:  # both writers stream, so memory does not grow with the run
        return write_pcap(dest, _packets(run)), "pcap"
    return write_pcapng(dest, _packets(run)), "pcapng"
