"""Storage under contention: a flush never waits for the storage lock (threads scheduler).

A worker that finds the lock taken leaves its flush to the holder, which makes the event and the
release check as soon as it lets go. These tests hold the lock in one thread and flush from
another, so the hand-over is exercised deterministically rather than by chance.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ftmbctl import records as rec
from ftmbctl.storage import Storage
from ftmbctl.store import LogScan, iter_chunks, read_file_header

RUN_ID = bytes(range(16))


def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path, RUN_ID, 2, time.time_ns)


def events(run: Path) -> list[rec.Event]:
    path = run / "timeline.log"
    data = path.read_bytes()
    scan = LogScan(read_file_header(path, data))
    return [e for chunk in iter_chunks(path, data, scan) for e in rec.iter_events(chunk.raw)]


def in_thread(fn, *args) -> None:
    worker = threading.Thread(target=fn, args=args)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "a flush waited for the storage lock"


def test_a_flush_that_finds_the_lock_taken_is_committed_by_the_holder(tmp_path: Path) -> None:
    st = storage(tmp_path)
    st.logs[0].items.append((0, 0, 1, 5))
    with st._locked():
        in_thread(st.flush_queue, 0)
        assert st.queue_files[0].records == 1  # the chunk is written ...
        assert (st.durables[0], st.events) == (0, 0)  # ... but not counted while the lock is held
    assert (st.durables[0], st.events) == (1, 1)
    st.finish(sync=False)


def test_an_output_waiting_on_that_flush_is_released_by_the_holder(tmp_path: Path) -> None:
    st = storage(tmp_path)
    st.flush_input(rec.pack_input(0, 1, 1, 4, b"abcd"), 1)
    st.totals[0] = 1
    st.logs[0].items.append((0, 0, 1, 5))
    st.hold_output(0, [(0, 0, 1, 7, (1, 0), b"out")])
    assert st.ol.released == 0  # its vector needs queue 0's record
    with st._locked():
        in_thread(st.flush_queue, 0)
        assert st.ol.released == 0
    assert st.ol.released == 1
    st.finish(sync=False)
    assert [e.kind for e in events(tmp_path)][-3:] == [rec.EV_QUEUE_FLUSH, rec.EV_RELEASE, rec.EV_END]


def test_a_releasable_output_held_while_the_lock_is_taken_goes_out_when_it_is_let_go(tmp_path: Path) -> None:
    st = storage(tmp_path)
    st.flush_input(rec.pack_input(0, 1, 1, 4, b"abcd"), 1)
    with st._locked():
        in_thread(st.hold_output, 1, [(0, 0, 1, 7, (0, 0), b"out")])
        assert st.ol.released == 0
    assert st.ol.released == 1
    st.finish(sync=False)
