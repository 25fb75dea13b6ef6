"""Snapshots keep what they are given, exactly, or refuse it at once, saying where it is.

- every value a middlebox may keep (``ctx.local``, shared variables) round-trips through the codec
  and a snapshot file with its exact type (a Hypothesis round trip compared type by type);
- every other value is refused when the snapshot is taken, one sentence naming the snapshot, the
  path from ``queue Q local state`` or ``shared variable NAME``, the type and what to store instead;
- a shared map refuses mutable or non-plain keys and values at the access, naming the variable;
- through the CLI: a bytearray in ``ctx.local`` records, crash-replays and verifies; an IntEnum in
  ``ctx.local`` and a list in a shared map end the record with exit 3 and that sentence.
"""

from __future__ import annotations

import collections
import enum
import json
import re
import struct
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftmbctl import codec
from ftmbctl.cli import app
from ftmbctl.errors import BadInput, MiddleboxStateError
from ftmbctl.shared import Map, MapView, MISSING
from ftmbctl.snapshot import FLAG_FINAL, VERSION, decode_snapshot, encode_snapshot
from runreader import recorded_middlebox

MUTANTS = Path(__file__).resolve().parent / "mutants" / "state_mutants.py"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}
RUN_ID = bytes(range(16))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PLAIN = "None, bool, int, float, str, bytes, bytearray, and tuple, list, dict, set, frozenset of those"


def exact(value: Any) -> Any:
    """A comparable form that tells every storable type apart, recursively: ``1`` from ``True``,
    ``(1,)`` from ``[1]``, ``b""`` from ``bytearray()``, ``0.0`` from ``-0.0``, a NaN by its bits."""
    kind = type(value)
    if value is None or kind in (bool, int, str, bytes):
        return (kind.__name__, value)
    if kind is bytearray:
        return ("bytearray", bytes(value))
    if kind is float:
        return ("float", struct.pack("<d", value))
    if kind in (tuple, list):
        return (kind.__name__, tuple(exact(v) for v in value))
    if kind is dict:  # insertion order is part of what a snapshot keeps
        return ("dict", tuple((exact(k), exact(v)) for k, v in value.items()))
    if kind in (set, frozenset):
        return (kind.__name__, tuple(sorted((exact(v) for v in value), key=repr)))
    raise AssertionError(f"not a storable type: {kind}")


def test_exact_tells_apart_what_equality_does_not() -> None:
    pairs = [(1, True), (0, False), (1, 1.0), ((1,), [1]), (b"a", bytearray(b"a")), ({1}, frozenset({1})),
             (0.0, -0.0), ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ([{"k": (1,)}], [{"k": [1]}])]
    for a, b in pairs:
        assert exact(a) != exact(b), (a, b)
    nan = float("nan")
    assert exact([nan, {nan}]) == exact([nan, {nan}])


# ---------------------------------------------------------------- round trips

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(1 << 300), 1 << 300),
                    st.sampled_from([-(1 << 63), (1 << 63) - 1, 1 << 63, -(1 << 63) - 1]),
                    st.floats(), st.sampled_from([0.0, -0.0, float("inf"), float("nan")]),
                    st.text(max_size=8), st.binary(max_size=8))
hashables = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3).map(tuple),
                                                          st.frozensets(inner, max_size=3)), max_leaves=8)
values = st.recursive(
    st.one_of(scalars, st.binary(max_size=8).map(bytearray)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(hashables, inner, max_size=4),
        st.sets(hashables, max_size=4), st.frozensets(hashables, max_size=4)),
    max_leaves=25)


@FUZZ
@given(values)
def test_every_storable_value_round_trips_exactly(value: Any) -> None:
    data = codec.encode(value)
    back = codec.decode(data)
    assert exact(back) == exact(value)
    assert codec.encode(back) == data
    if type(value) in (list, dict, set, bytearray):  # a fresh object, not the one that was stored
        assert back is not value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.text(max_size=6), values, max_size=4), min_size=1, max_size=3),
       st.lists(st.integers(0, 1 << 40), max_size=3))
def test_local_states_round_trip_through_a_snapshot_file(local: list, counters: list) -> None:
    state = {"boundary": 7, "shared": [(f"c{i}", "counter", i, v) for i, v in enumerate(counters)],
             "local": local, "time_ns": 1}
    data = encode_snapshot(RUN_ID, 1, 7, state)
    assert struct.unpack_from("<H", data, 4)[0] == VERSION == 2
    assert exact(decode_snapshot(Path("s.snap"), data, RUN_ID).state) == exact(state)


def test_a_bytearray_comes_back_as_a_new_bytearray() -> None:
    buf = bytearray(b"GET /")
    state = {"local": [{"flows": {("10.0.0.1", 80): buf}}]}
    back = decode_snapshot(Path("s.snap"), encode_snapshot(RUN_ID, 1, 0, state), RUN_ID).state
    again = back["local"][0]["flows"][("10.0.0.1", 80)]
    assert type(again) is bytearray and again == buf and again is not buf
    again.extend(b"index.html")  # what a middlebox does with it after a restore
    assert buf == b"GET /"


# ---------------------------------------------------------------- refused, with the path

class Proto(enum.IntEnum):
    TCP = 6


class Flags(enum.IntFlag):
    SYN = 2


class Port(int):
    pass


class Label(str):
    pass


class Endpoint:
    pass


class Pair(NamedTuple):
    a: int
    b: int


def refusal(state: dict[str, Any], number: int = 1, flags: int = 0) -> str:
    with pytest.raises(MiddleboxStateError) as info:
        encode_snapshot(RUN_ID, number, 0, state, flags)
    assert isinstance(info.value, BadInput) and info.value.exit_code == 3
    assert isinstance(info.value.__cause__, type(None)) and info.value.__suppress_context__
    message = str(info.value)
    assert "\n" not in message and message.count(". ") == 0, message
    return message


def local_refusal(value: Any, queue: int = 0) -> str:
    local = [{} for _ in range(queue)] + [value]
    return refusal({"boundary": 0, "shared": [], "local": local})


def test_int_enum_in_local_state_is_refused_with_its_key() -> None:
    assert local_refusal({"seen": 3, "proto": Proto.TCP}) == (
        "snapshot 1: queue 0 local state ['proto'] holds an object of type Proto (a subclass of int); "
        "store int(x) instead")


def test_int_flag_and_int_subclass_are_refused() -> None:
    assert local_refusal({"f": [1, Flags.SYN]}, queue=1) == (
        "snapshot 1: queue 1 local state ['f'][1] holds an object of type Flags (a subclass of int); "
        "store int(x) instead")
    assert local_refusal({"ports": {("10.0.0.1", 80): {"p": Port(80)}}}) == (
        "snapshot 1: queue 0 local state ['ports'][('10.0.0.1', 80)]['p'] holds an object of type Port "
        "(a subclass of int); store int(x) instead")


def test_an_object_under_a_tuple_key_is_refused_with_the_whole_path() -> None:
    assert local_refusal({"flows": {("10.0.0.1", 80): (1, Endpoint())}}) == (
        "snapshot 1: queue 0 local state ['flows'][('10.0.0.1', 80)][1] holds an object of type Endpoint; "
        f"store plain data instead ({PLAIN})")


def test_functions_memoryviews_and_builtin_oddities_are_refused() -> None:
    assert local_refusal({"cb": len}) == (
        "snapshot 1: queue 0 local state ['cb'] holds a builtin_function_or_method; "
        f"store plain data instead ({PLAIN})")
    assert local_refusal({"f": [lambda: 0]}).startswith("snapshot 1: queue 0 local state ['f'][0] holds a function;")
    assert local_refusal({"view": memoryview(b"ab")}) == (
        "snapshot 1: queue 0 local state ['view'] holds a memoryview; store bytes(x) or bytearray(x) instead")
    assert local_refusal({"z": 1j}).startswith("snapshot 1: queue 0 local state ['z'] holds a complex;")
    assert local_refusal({"q": collections.deque()}).startswith(
        "snapshot 1: queue 0 local state ['q'] holds an object of type deque;")


def test_subclasses_of_containers_and_str_are_refused() -> None:
    assert local_refusal({"seen": collections.OrderedDict()}) == (
        "snapshot 1: queue 0 local state ['seen'] holds an object of type OrderedDict (a subclass of dict); "
        "store dict(x) instead")
    assert local_refusal({"c": collections.defaultdict(int)}).endswith("(a subclass of dict); store dict(x) instead")
    assert local_refusal({"p": Pair(1, 2)}).endswith("Pair (a subclass of tuple); store tuple(x) instead")
    assert local_refusal({"name": Label("x")}).endswith("Label (a subclass of str); store str(x) instead")


def test_a_refused_dict_key_or_set_member_is_named() -> None:
    assert local_refusal({"flows": {Proto.TCP: 1}}) == (
        "snapshot 1: queue 0 local state ['flows'] key <Proto.TCP: 6> is an object of type Proto "
        "(a subclass of int); store int(x) instead")
    assert local_refusal({"flows": {(1, Proto.TCP): 1}}) == (
        "snapshot 1: queue 0 local state ['flows'] key (1, <Proto.TCP: 6>) item [1] holds an object of type "
        "Proto (a subclass of int); store int(x) instead")
    assert local_refusal({"protos": {Proto.TCP}}) == (
        "snapshot 1: queue 0 local state ['protos'] member <Proto.TCP: 6> is an object of type Proto "
        "(a subclass of int); store int(x) instead")


def test_a_refused_whole_local_state_and_a_cycle() -> None:
    assert local_refusal(Endpoint()) == (
        f"snapshot 1: queue 0 local state is an object of type Endpoint; store plain data instead ({PLAIN})")
    loop: list = []
    loop.append(loop)
    message = local_refusal({"loop": loop})
    assert message.startswith("snapshot 1: queue 0 local state ['loop'][0][0][0]")
    assert "[0][...] holds a list nested" in message
    assert message.endswith("holds a list nested deeper than 64 containers; "
                            "flatten it (a container that holds itself never ends)")
    assert len(message) < 300


def test_shared_variables_are_named() -> None:
    shared = [("hits", "counter", 3, Proto.TCP)]
    assert refusal({"boundary": 0, "shared": shared, "local": []}, 0xFFFFFFFF, FLAG_FINAL) == (
        "the final snapshot (reference.snap): shared variable 'hits' holds an object of type Proto "
        "(a subclass of int); store int(x) instead")
    # a map entry that got past the access check (here: put in the dict by hand)
    shared = [("hits", "counter", 3, 3), ("nat_map[3]", "map", 2, {(6, 80): [1, Endpoint()]})]
    assert refusal({"boundary": 0, "shared": shared, "local": [{}]}, 4) == (
        "snapshot 4: shared variable 'nat_map[3]' key (6, 80) value [1] holds an object of type Endpoint; "
        f"store plain data instead ({PLAIN})")
    shared = [("m", "map", 2, {(6, 80): Endpoint()})]
    assert refusal({"boundary": 0, "shared": shared, "local": [{}]}).startswith(
        "snapshot 1: shared variable 'm' key (6, 80) holds an object of type Endpoint;")


def test_the_codec_error_carries_the_path_and_the_type() -> None:
    with pytest.raises(codec.UnstorableValue) as info:
        codec.encode({"flows": {("10.0.0.1", 80): [b"x", Proto.TCP]}})
    exc = info.value
    assert isinstance(exc, TypeError)
    assert exc.kind is Proto
    assert exc.path == (("value", "flows"), ("value", ("10.0.0.1", 80)), ("index", 1))
    assert str(exc) == ("the value at ['flows'][('10.0.0.1', 80)][1] holds an object of type Proto "
                        "(a subclass of int); store int(x) instead")


def test_a_long_key_is_shortened_in_the_path() -> None:
    message = local_refusal({"k" * 200: Endpoint()})
    assert "['kkkk" in message and "...]" in message and len(message) < 300


# ---------------------------------------------------------------- shared maps refuse at the access

def test_mutable_and_non_plain_map_values_are_refused_at_the_access() -> None:
    target = Map("nat_map[3]", 7)
    target.op_put((6, 80), (b"\x0a\x00\x00\x01", 1024, 1.5, None, True, ("nested", (1,))))
    before = (dict(target.data), target.digest, target.count)
    cases = [
        ("k", [1], "the value is a list, and shared map values must be plain immutable data "
                   "(None, bool, int, float, str, bytes, and tuples of those); store a tuple instead"),
        ("k", {"a": 1}, "the value is a dict,"),
        ("k", {1}, "the value is a set,"),
        ("k", frozenset({1}), "the value is a frozenset,"),
        ("k", bytearray(b"x"), "the value is a bytearray,"),
        ("k", Endpoint(), "the value is an object of type Endpoint,"),
        ("k", Proto.TCP, "the value is an object of type Proto (a subclass of int), and"),
        ("k", (1, (2, [3])), "the value[1][1] is a list,"),
        ([1, 2], 0, "the key is a list, and shared map keys must be plain"),
        ((6, bytearray()), 0, "the key[1] is a bytearray,"),
        (Proto.TCP, 0, "the key is an object of type Proto"),
    ]
    for key, value, expected in cases:
        for write in (lambda: target.op_put(key, value), lambda: target.op_update(key, lambda _old: value),
                      lambda: target.op_apply(lambda view: view.put(key, value), None)):
            with pytest.raises(TypeError) as info:
                write()
            message = str(info.value)
            assert message.startswith(f"shared variable 'nat_map[3]' key {key!r}: {expected}"), message
    assert (dict(target.data), target.digest, target.count) == before  # nothing half-written


def test_refusals_say_what_to_store_instead() -> None:
    target = Map("m", 0)
    advice = [(bytearray(b"x"), "store bytes instead"), ((), None), (frozenset(), "store a sorted tuple instead"),
              (Proto.TCP, "store int(x) instead"), (Label("x"), "store str(x) instead"), ({}, "one map entry per key")]
    for value, expected in advice:
        if expected is None:
            target.op_put("ok", value)
            continue
        with pytest.raises(TypeError, match=re.escape(expected)):
            target.op_put("k", value)


def test_plain_immutable_values_are_stored_and_restored() -> None:
    target = Map("m", 0)
    entries = {None: 1, True: -0.0, 2: "x", 2.5: b"", "s": (), b"b": (1, ("a", (None, 2.5, b"z"))),
               (1, (2, "x")): float("inf")}
    for key, value in entries.items():
        target.op_put(key, value)
    target.op_add("n", 5)
    target.op_update("n", lambda old: MISSING)
    view = MapView(target)
    view.put("v", (1, 2))
    restored = Map("m", 0)
    restored.load(codec.decode(codec.encode(target.dump())), target.count)
    assert exact(restored.dump()) == exact(target.dump()) and restored.digest == target.digest


# ---------------------------------------------------------------- through the CLI

def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


def error_line(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.rstrip("\n").splitlines()[-1] == errors[0], result.stderr
    return errors[0]


def record(trace: Path, run: Path, cls: str):
    return cli("record", trace, "--middlebox", f"{MUTANTS}:{cls}", "--queues", 2, "--snapshot-every", 50,
               "--out", run)


def test_bytearray_in_local_state_records_crash_replays_and_verifies(small_trace_head, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = record(small_trace_head(120), run, "ExactLocalState")
    assert result.exit_code == 0, (result.output, result.exception)
    snap = decode_snapshot(run, (run / "snapshots" / "snap-000001.snap").read_bytes())
    buffers = [buf for local in snap.state["local"] for buf in local["buffers"].values()]
    assert buffers and all(type(buf) is bytearray for buf in buffers)
    assert all(type(local["lengths"]) is set and type(local["recent"]) is tuple for local in snap.state["local"])
    result = cli("crash-replay", run, "-m", recorded_middlebox(run), "--all", "--jobs", 2)
    assert result.exit_code == 0, (result.output, result.exception)
    result = cli("verify", run, "-m", recorded_middlebox(run), "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    report = json.loads(result.stdout)
    assert report["consistent"] and len(report["crash_points"]) >= 10
    assert any(p["recovery"]["snapshot"] for p in report["crash_points"])  # some restored a bytearray


def test_int_enum_in_local_state_is_refused_at_the_first_snapshot(small_trace_head, tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = error_line(record(small_trace_head(120), run, "EnumInLocalState"), 3)
    assert re.fullmatch(r"error: snapshot 1: queue [01] local state \['proto'\] holds an object of type Proto "
                        r"\(a subclass of int\); store int\(x\) instead", line), line
    assert not run.exists()  # the half-written run is discarded


def test_object_in_local_state_is_refused_naming_its_key(small_trace_head, tmp_path: Path) -> None:
    line = error_line(record(small_trace_head(120), tmp_path / "run", "ObjectInLocalState"), 3)
    assert re.fullmatch(r"error: snapshot 1: queue [01] local state \['buffers'\]\[\('peer', 1\)\] holds an "
                        r"object of type Endpoint; store plain data instead \(.*\)", line), line


def test_list_in_shared_map_is_refused_at_the_access(small_trace_head, tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = error_line(record(small_trace_head(120), run, "ListInSharedMap"), 3)
    assert "shared variable 'last' key ('sizes', 0): the value is a list, and shared map values must be plain " \
           "immutable data" in line, line
    assert re.search(r"store a tuple instead on packet \d+ \(queue [01]\)$", line), line
    assert not run.exists()


def test_a_value_first_kept_after_the_last_snapshot_is_refused_at_the_final_one(small_trace_head,
                                                                                tmp_path: Path) -> None:
    result = cli("record", small_trace_head(120), "--middlebox", f"{MUTANTS}:EnumInLocalState", "--queues", 2,
                 "--snapshot-every", 500, "--out", tmp_path / "run")
    line = error_line(result, 3)
    assert re.fullmatch(r"error: the final snapshot \(reference\.snap\): queue [01] local state \['proto'\] holds "
                        r"an object of type Proto \(a subclass of int\); store int\(x\) instead", line), line
