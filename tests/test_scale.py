"""What keeps memory from growing with the trace: the timeline index, bounded caches, the
synthetic trace's reused ports, and the peak-memory measurement itself (fast cases only; the
100,000 vs 1,000,000 packet measurement is benchmarks/memory.py)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import dpkt
import pytest

from ftmbctl import records as rec
from ftmbctl.bench_memory import StageFailed, measure_peak_rss
from ftmbctl.errors import DamagedRun
from ftmbctl.record import RecordConfig, record
from ftmbctl.rundir import (EVENT_CHUNK_CACHE, SNAPSHOT_CACHE, BoundedCache, ChunkIndex, EventIndex, RunDir,
                             open_log)
from ftmbctl.store import CHUNK_HEADER, KIND_INPUT, KIND_TIMELINE, ChunkWriter
from ftmbctl.crash import chain_points
from ftmbctl.verify import _WORKER, SweepConfig, _init_worker, _run_point, sweep
from runreader import recorded_middlebox

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = bytes(range(16))


@pytest.fixture(scope="module")
def run(small_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose timeline spans several chunks and whose trace spans many snapshots."""
    out = tmp_path_factory.mktemp("scale") / "run"
    record(RecordConfig(trace=small_trace, out=out, queues=2, snapshot_every=25, flush_every=4))
    return out


def all_events(path: Path, limit: int | None = None) -> list[rec.Event]:
    """The timeline read as one list, as RunDir.events() did before it became an index."""
    return list(open_log(path, KIND_TIMELINE, limit=limit).records(rec.iter_events))


def timeline_chunk_starts(path: Path) -> list[int]:
    return [chunk.offset for chunk in open_log(path, KIND_TIMELINE).chunks()]


def test_event_index_equals_the_list_it_replaces(run: Path) -> None:
    events, expected = RunDir(run).events(), all_events(run / "timeline.log")
    assert len(timeline_chunk_starts(run / "timeline.log")) >= 3  # the index must cross chunk boundaries
    assert len(events) == len(expected)
    assert list(events) == expected
    assert [events[i] for i in range(len(expected))] == expected
    assert [events[-i] for i in range(1, len(expected) + 1)] == expected[::-1]
    assert events[250:260] == expected[250:260] and events[::97] == expected[::97] and events[-3:] == expected[-3:]
    for bad in (len(expected), -len(expected) - 1):
        with pytest.raises(IndexError):
            events[bad]


def test_event_index_keeps_few_decoded_chunks(run: Path) -> None:
    events = RunDir(run).events()
    for i in range(0, len(events), 7):
        events[i]
        events[len(events) - 1 - i]
    assert len(events._cache) <= EVENT_CHUNK_CACHE


def test_event_index_of_a_timeline_with_a_torn_tail_stops_before_it(run: Path, tmp_path: Path) -> None:
    path = run / "timeline.log"
    last = timeline_chunk_starts(path)[-1]
    cut = tmp_path / "timeline.log"
    cut.write_bytes(path.read_bytes()[:last + CHUNK_HEADER.size + 3])
    events, expected = EventIndex(open_log(cut, KIND_TIMELINE)), all_events(cut)
    assert list(events) == expected and len(expected) < len(all_events(path))
    assert events[-1] == expected[-1] and events[-1].index == len(expected) - 1


@pytest.mark.parametrize("where", ["header", "payload"])
def test_event_index_of_a_corrupt_timeline_fails_as_reading_it_all_does(run: Path, tmp_path: Path,
                                                                         where: str) -> None:
    path = run / "timeline.log"
    middle = timeline_chunk_starts(path)[1]
    data = bytearray(path.read_bytes())
    data[middle + (4 if where == "header" else CHUNK_HEADER.size + 5)] ^= 0x40
    bad = tmp_path / "timeline.log"
    bad.write_bytes(bytes(data))
    with pytest.raises(DamagedRun) as as_list:
        all_events(bad)
    with pytest.raises(DamagedRun) as as_index:
        EventIndex(open_log(bad, KIND_TIMELINE))
    assert str(as_index.value) == str(as_list.value)
    assert f"at byte {middle}" in str(as_index.value)


def test_event_index_of_a_crash_image_view_ends_at_its_limit(run: Path) -> None:
    path = run / "timeline.log"
    limit = timeline_chunk_starts(path)[2]
    view = RunDir(run, limits={"timeline.log": limit})
    assert list(view.events()) == all_events(path, limit)


def test_chunk_index_starts_a_reader_at_the_chunk_holding_a_record(run: Path) -> None:
    rundir = RunDir(run)
    index = rundir.chunk_index("input.log")
    assert rundir.chunk_index("input.log") is index  # made once per run
    log = rundir.log("input.log")
    chunks = [(c.offset, c.first_seq, c.count) for c in log.chunks()]
    assert list(index.offsets) == [c[0] for c in chunks] and index.records == sum(c[2] for c in chunks)
    for seq in range(index.records):
        first = next(log.chunks(*index.locate(seq)))
        assert first.first_seq <= seq < first.first_seq + first.count
    assert [c.offset for c in log.chunks(*index.locate(index.records + 5))] == [chunks[-1][0]]


def test_chunk_index_from_headers_equals_the_checked_one(run: Path) -> None:
    log = RunDir(run).log("timeline.log")
    from_heads, checked = ChunkIndex(log), EventIndex(log).chunks
    assert (from_heads.offsets, from_heads.firsts, from_heads.records) == (checked.offsets, checked.firsts,
                                                                            checked.records)


def rss_file_kib() -> int | None:
    """Resident pages of mapped files in this process (Linux), or None where it cannot be read."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))
    except (OSError, StopIteration):
        return None


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24 MiB log of incompressible chunks: mapping it whole would show in resident memory."""
    path = tmp_path_factory.mktemp("big") / "input.log"
    writer = ChunkWriter(path, KIND_INPUT, RUN_ID)
    noise = random.Random(1)
    for _ in range(768):
        writer.append(noise.randbytes(32 << 10), 1)
    writer.close()
    return path


@pytest.mark.parametrize("reader", ["chunks", "chunk index", "unfinished"])
def test_reading_a_log_through_does_not_keep_its_pages(big_log: Path, reader: str) -> None:
    before = rss_file_kib()
    if before is None:
        pytest.skip("no /proc/self/status RssFile on this system")
    log = open_log(big_log, KIND_INPUT, RUN_ID)
    if reader == "chunks":
        assert sum(chunk.count for chunk in log.chunks()) == 768
    elif reader == "chunk index":
        assert ChunkIndex(log).records == 768
    else:
        chunks = log.chunks()
        for _ in range(700):
            next(chunks)
    assert rss_file_kib() - before < 4 << 10  # KiB: the log is 24 MiB


def test_bounded_cache_keeps_the_most_recently_used() -> None:
    cache: BoundedCache[int, str] = BoundedCache(2)
    cache[1], cache[2] = "one", "two"
    assert cache.get(1) == "one"  # 1 is now the most recent: 2 goes first
    assert cache.setdefault(3, "three") == "three"
    assert dict(cache) == {1: "one", 3: "three"}
    assert cache.setdefault(1, "other") == "one" and cache.get(2, "gone") == "gone"


def test_sweep_keeps_a_bounded_number_of_snapshots(run: Path, tmp_path: Path) -> None:
    report = sweep(run, SweepConfig(middlebox=recorded_middlebox(run), sample=3, seed=1, jobs=1))
    assert report.consistent and report.selection["snapshot_chain"] > SNAPSHOT_CACHE
    # what a worker process keeps, looked at in this process: the same points through the same code
    _init_worker(str(run), None, str(tmp_path))
    for point in chain_points(_WORKER["events"], None, 1):
        assert _run_point(point, True)["consistent"]
    assert len(_WORKER["states"]) <= SNAPSHOT_CACHE
    assert len(_WORKER["run"].snapshot_cache) <= SNAPSHOT_CACHE


def make_trace() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_trace", ROOT / "traces" / "make_trace.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mapped_endpoints(frames: list[tuple[int, bytes]]) -> set[tuple[int, bytes, int]]:
    """(protocol, inside address, port or echo id) of every frame that makes a NAT map an inside
    endpoint: a TCP SYN, a UDP datagram or an ICMP echo request from inside to outside."""
    found = set()
    for _ts, frame in frames:
        ip = dpkt.ethernet.Ethernet(frame).data
        if not isinstance(ip, dpkt.ip.IP) or ip.src[0] not in (10, 192) or ip.dst[0] in (10, 192):
            continue
        l4 = ip.data
        if isinstance(l4, dpkt.tcp.TCP) and l4.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK) == dpkt.tcp.TH_SYN:
            found.add((ip.p, ip.src, l4.sport))
        elif isinstance(l4, dpkt.udp.UDP):
            found.add((ip.p, ip.src, l4.sport))
        elif isinstance(l4, dpkt.icmp.ICMP) and l4.type == dpkt.icmp.ICMP_ECHO:
            found.add((ip.p, ip.src, l4.data.id))
    return found


def test_reused_ports_keep_the_mapped_endpoints_from_growing_with_the_trace() -> None:
    builder = make_trace().TraceBuilder
    plain, reused = builder(3).build(2000), builder(3, reuse_ports=True).build(2000)
    assert reused == builder(3, reuse_ports=True).build(2000)  # same seed, same bytes
    longer = builder(3, reuse_ports=True).build(8000)
    assert len(mapped_endpoints(reused)) < len(mapped_endpoints(plain))
    # four times the packets, far fewer than four times the endpoints (without the option: 3.7x)
    assert len(mapped_endpoints(longer)) < 2 * len(mapped_endpoints(reused))


def test_measure_peak_rss_on_a_tiny_trace(tmp_path: Path) -> None:
    seen: list[str] = []
    result = measure_peak_rss(300, tmp_path, sample=2, progress=seen.append)
    assert result["packets"] == 300 and result["trace_bytes"] > 0
    stages = ("record", "crash_replay", "verify")
    assert all(result[f"{stage}_mb"] > 0 for stage in stages)
    assert result["peak_mb"] == max(result[f"{stage}_mb"] for stage in stages)
    assert set(result["seconds"]) == {"trace", *stages} and all(s > 0 for s in result["seconds"].values())
    assert [line.split(":")[0] for line in seen] == ["trace", "record", "crash-replay", "verify"]


def test_measure_peak_rss_reports_the_stage_that_failed(tmp_path: Path) -> None:
    with pytest.raises(StageFailed, match=r"record failed with exit code [1-9].*no-such-middlebox"):
        measure_peak_rss(50, tmp_path, middlebox="no-such-middlebox", sample=1)
