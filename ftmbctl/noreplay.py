"""Recovery of a No-Replay run (DESIGN §8): restore the latest snapshot, lose what came after.

A No-Replay run logs no shared accesses and no non-deterministic values, so nothing after a
snapshot can be reproduced: recovery restores the latest intact snapshot, and the inputs that
had arrived since its boundary are lost, as if the network had dropped them. The middlebox then
goes on with the inputs that arrive after the crash.

The same is all an FTMB run can do when its Input Logger failed with the master
(``crash-replay --also-lose il``, components.py): the packets since the snapshot are gone, so
its logged accesses have nothing to replay. It goes on in its own mode.

Its promise to the network is kept by holding every output until a durable snapshot covers the
input that made it. So the one thing a crash point can break is that: an output in the image's
output log whose input the restored snapshot does not cover was released and is now forgotten
("uncovered"). Outputs of the recovered run are new outputs of new inputs, so none may repeat
an output id released before the crash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ftmbctl import records as rec
from ftmbctl.components import IL, Loss
from ftmbctl.errors import DamagedRun
from ftmbctl.middlebox import build_middlebox
from ftmbctl.pcapio import RawPacket
from ftmbctl.record import RecordConfig, Recorder
from ftmbctl.recovery import Arrivals, RecoveryResult, note_gap, restore_latest
from ftmbctl.rundir import RunDir
from ftmbctl.trust import spec_to_run


class NoReplayRecovery(Recorder):
    """The record engine in the run's mode, started from a snapshot, after the lost inputs."""

    def __init__(self, image: RunDir, arrivals: Arrivals, out: Path, compare_with: RunDir | None = None,
                 middlebox: str | None = None, loss: Loss | None = None) -> None:
        """With ``compare_with`` (a verify sweep), the continuation stops at its first snapshot:
        there is no failure-free state to compare with once inputs were lost, and the first
        snapshot shows that the recovered middlebox runs and releases again. ``loss`` (a check of
        ``crash-replay --also-lose``) says what the outside world knows: where the inputs that
        arrive again begin when the image's Input Logger was lost, and what had left the box."""
        man = image.manifest
        mb = man["middlebox"]
        cfg = RecordConfig(trace=Path(man["trace"]["path"]), out=out,
                           middlebox=spec_to_run(man, middlebox, image.path), mb_opts=list(mb["options"]), queues=image.queues, snapshot_every=man["snapshot_every"],
                           flush_every=man["flush_every"], scheduler="chaos", seed=man["seed"],
                           mode=man.get("mode", "ftmb"), force=True)
        super().__init__(cfg, build_middlebox(cfg.middlebox, cfg.mb_opts))
        self.image = image
        self.arrivals = arrivals
        self.compare_with = compare_with
        self.loss = loss
        self.durable_writes = False  # a recovered run is scratch: no fsync, no file hashes
        for live in self.live:
            live.wall_clock = man.get("scheduler") == "threads"
        self.trace_sha = man["trace"]["sha256"]
        self.res = RecoveryResult(snapshot=0, boundary=0, out_dir=str(out), mode=cfg.mode)
        self._restore()

    def _restore(self) -> None:
        image, res = self.image, self.res
        at = restore_latest(self, image, res)
        input_at, output_at = at["input.log"], at["output.log"]
        arrived = self._arrived(*input_at)
        if self.loss is not None and self.loss.lost(IL):  # the image cannot say; the world can
            arrived = self.loss.resume_at
        res.durable_inputs = arrived
        res.lost_inputs = arrived - res.boundary
        self._check_released(*output_at)
        # The recovered middlebox takes the next input that arrives; its snapshots keep their
        # places (k at k * snapshot_every), so numbering goes on from the boundary it starts at.
        self.start_boundary = arrived
        self.start_number = arrived // self.cfg.snapshot_every
        self.manifest_extra = {"recovered_from": {"image": str(image.path), "snapshot": res.snapshot,
                                                  "lost_inputs": res.lost_inputs}}

    def _arrived(self, offset: int, first_seq: int) -> int:
        """Inputs that had arrived at the crash: ids run on from the snapshot's boundary."""
        log = self.image.log("input.log")
        expect = self.res.boundary
        for chunk in log.chunks(offset, first_seq):
            for record in log.decode(chunk, rec.iter_inputs):
                if record.id != expect:
                    raise DamagedRun(f"{log.path}: chunk at byte {chunk.offset} holds packet {record.id} "
                                     f"where {expect} was expected")
                expect += 1
        self.res.torn_bytes["input.log"] = log.scan.torn_bytes
        return expect

    def _check_released(self, offset: int, first_seq: int) -> None:
        """Every output released after the snapshot was taken must be of an input it covers: as
        the image's Output Logger recorded them, or as the outside world saw them (``loss``)."""
        log = self.image.log("output.log")
        released = [output.output_id for output in log.records(rec.iter_outputs, offset, first_seq)]
        self.res.torn_bytes["output.log"] = log.scan.torn_bytes
        if self.loss is not None:
            released = list(self.loss.released)
        self.res.released_before = len(released)
        self.res.uncovered_outputs = [list(oid) for oid in released if oid[0] >= self.res.boundary]

    def _input_packets(self) -> Iterator[RawPacket]:
        expect = self.start_boundary
        for packet in self.arrivals(expect):
            if packet.index != expect:
                note_gap(self.res, packet.index, expect,
                         f"packet {packet.index} arrived where {expect} was expected")
            expect = packet.index + 1
            yield packet

    def _after_snapshot(self, number: int, boundary: int, state: dict[str, Any]) -> None:
        if self.compare_with is not None:
            self.res.compared_at = f"packet boundary {boundary}"
            self.stop_requested = True

    def recover(self) -> RecoveryResult:
        result = self.run()
        self.res.inputs_processed = result.packets_in
        return self.res
