"""``ftmbctl export``: the released outputs of a run as a capture file tcpdump and tshark open.

Each output keeps its link type; its timestamp is its release time (simulated under the chaos
scheduler, wall clock under threads). One link type gives a classic pcap, several a pcapng.
Alerts (outputs with ALERT_LINKTYPE) are not packets: ``export_alerts`` writes them as JSON lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ftmbctl.context import ALERT_LINKTYPE
from ftmbctl.pcapio import RawPacket, write_pcap, write_pcapng
from ftmbctl.rundir import RunDir


def _packets(run: RunDir) -> Iterator[RawPacket]:
    number = 0
    for out in run.outputs():
        if out.linktype != ALERT_LINKTYPE:
            yield RawPacket(number, out.release_ns, out.linktype, len(out.data), out.data)
            number += 1


def export_outputs(run_dir: Path, dest: Path) -> tuple[int, str]:
    """Write every released output packet of ``run_dir`` to ``dest``; returns (packets, format)."""
    run = RunDir(run_dir)
    linktypes = {out.linktype for out in run.outputs() if out.linktype != ALERT_LINKTYPE}
    if len(linktypes) <= 1:  # both writers stream, so memory does not grow with the run
        return write_pcap(dest, _packets(run)), "pcap"
    return write_pcapng(dest, _packets(run)), "pcapng"


def export_alerts(run_dir: Path, dest: Path) -> int:
    """Write every released alert as one JSON line: output id, release time, text."""
    run = RunDir(run_dir)
    count = 0
    with open(dest, "w", encoding="utf-8") as handle:
        for out in run.outputs():
            if out.linktype == ALERT_LINKTYPE:
                handle.write(json.dumps({"output_id": [out.input_id, out.index], "release_ns": out.release_ns,
                                         "alert": out.data.decode("utf-8", "replace")}) + "\n")
                count += 1
    return count
