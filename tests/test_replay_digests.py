"""What replay checks at each forced access (formats/queue-log.md, "What replay checks").

A PAL stores no digest when its access left the variable's digest unchanged, and 16 bits of it
otherwise. Replay must still catch a replayed access that changes a value the record only read,
one that only reads a value the record changed, and one that changes it to another value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ftmbctl import records as rec
from ftmbctl.crash import CrashPoint, image_spec, image_view
from ftmbctl.queuelog import QueueDecoder
from ftmbctl.record import RecordConfig, record
from ftmbctl.recovery import arrivals_from_log, recover
from ftmbctl.rundir import RunDir
from runreader import recorded_middlebox
from middleboxes_for_tests import spec

ENV = "FTMBCTL_TEST_ACCESS"


def record_with(how: str, trace: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> RunDir:
    monkeypatch.setenv(ENV, how)
    record(RecordConfig(trace=trace, out=out, middlebox=spec("ReadOrWrite"), queues=2, snapshot_every=20,
                        flush_every=4, seed=1))
    return RunDir(out)


def recover_late(run: RunDir, how: str, out: Path, monkeypatch: pytest.MonkeyPatch):
    """Recover from a crash just before the last snapshot, so every access after the one before
    it is replayed from the log."""
    monkeypatch.setenv(ENV, how)
    events = run.events()
    begins = [e.index for e in events if e.kind == rec.EV_SNAPSHOT_BEGIN]
    image = image_view(run, image_spec(run, events, CrashPoint(begins[-1])))
    return recover(image, arrivals_from_log(run), out, compare_with=run, middlebox=recorded_middlebox(run.path))


def digests(run: RunDir) -> list:
    return [r.digest for q in range(run.queues) for r in run.log(f"pal-{q}.log").records(QueueDecoder())
            if type(r) is rec.PalRecord]


@pytest.mark.parametrize("recorded, replayed, expected, got", [
    ("read", "add1", "value unchanged", "digest "),  # the record only read
    ("add1", "read", "digest ", "value unchanged"),  # the record changed it
    ("add1", "add2", "digest ", "digest "),          # changed, to another value
])
def test_a_replayed_access_that_leaves_another_value_diverges(small_trace: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, recorded: str,
                                                              replayed: str, expected: str, got: str) -> None:
    run = record_with(recorded, small_trace, tmp_path / "run", monkeypatch)
    stored = digests(run)
    assert stored and all((d is None) == (recorded == "read") for d in stored)
    res = recover_late(run, replayed, tmp_path / "recovered", monkeypatch)
    assert res.divergences, "replay made other writes than the record and nothing noticed"
    first = res.divergences[0]
    assert first["kind"] == "digest"
    assert first["expected"].startswith(expected) and first["got"].startswith(got), first
    if expected == got:
        assert first["expected"] != first["got"]


@pytest.mark.parametrize("how", ["read", "add1"])
def test_the_same_accesses_replay_without_divergence(small_trace: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    run = record_with(how, small_trace, tmp_path / "run", monkeypatch)
    res = recover_late(run, how, tmp_path / "recovered", monkeypatch)
    assert res.replayed > 0 and res.divergences == []
