"""docs/writing-a-middlebox.md and its example cannot drift from the code.

- ``examples/port_scan_counter.py:PortScanCounter``, loaded by path, records, crash-replays and
  verifies consistent through the CLI, as the guide shows;
- every public method of ``Context`` (and the declarations of ``SharedState``) is documented with
  the signature ``inspect.signature`` gives, and every method or ``ftmbctl`` name the guide uses
  exists;
- each classic bug of the guide, applied to the example as its diff says, is caught by verify
  with the invariants the guide names.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import socket
from pathlib import Path
from typing import Any

import dpkt
import pytest
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.context import Context
from ftmbctl.direct import run_direct
from ftmbctl.middlebox import Packet, build_middlebox, resolve_middlebox
from ftmbctl.shared import MISSING, MapView, SharedState
from runreader import recorded_middlebox

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-a-middlebox.md"
EXAMPLE = ROOT / "examples" / "port_scan_counter.py"
SPEC = f"{EXAMPLE}:PortScanCounter"
ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
RECORD_OPTS = ["--mb-opt", "threshold=5", "--queues", "2", "--snapshot-every", "100"]  # as in the guide
DECLARATIONS = ("counter", "map", "sharded_map")


def cli(*args: object):
    return CliRunner(env=ENV).invoke(app, [str(a) for a in args])


def record_and_verify(trace: Path, run: Path, spec: str) -> tuple[int, dict[str, Any]]:
    result = cli("record", trace, "--middlebox", spec, *RECORD_OPTS, "--out", run, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    result = cli("crash-replay", run, "-m", recorded_middlebox(run), "--every", 3, "--torn", "--jobs", 2)
    assert result.exit_code in (0, 1), (result.output, result.exception)
    verified = cli("verify", run, "-m", recorded_middlebox(run), "--json")
    assert verified.exit_code == result.exit_code, verified.output
    return verified.exit_code, json.loads(verified.stdout)


# ---------------------------------------------------------------- the example

def test_example_records_crash_replays_and_verifies_consistent(small_trace, tmp_path):
    code, report = record_and_verify(small_trace, tmp_path / "run", SPEC)
    failed = [(p["event"], p["violations"]) for p in report["crash_points"] if not p["consistent"]]
    assert code == 0 and report["consistent"] and not failed, failed[:3]
    assert len(report["crash_points"]) >= 40
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["middlebox"].pop("source_sha256")) == 64  # what replays must run (trust.py)
    assert manifest["middlebox"] == {"spec": SPEC, "options": ["threshold=5"]}
    result = cli("export", tmp_path / "run", "--alerts", tmp_path / "alerts.jsonl")
    assert result.exit_code == 0, result.output
    alerts = [json.loads(line)["alert"] for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert all(re.fullmatch(r"port \d+/(tcp|udp): 5 new flows within 10s, packet \d+", a) for a in alerts), alerts
    if small_trace.name == "small.pcap":  # the guide quotes the bundled trace
        assert alerts[0] == "port 53/udp: 5 new flows within 10s, packet 61"


def test_example_counts_new_flows_per_port_in_windows():
    """Its behaviour, by run_direct: one count per flow (both directions), windows by the clock,
    one alert per hot window, bounded flow table."""
    def syn(src: str, sport: int, dport: int, reply: bool = False) -> bytes:
        a, b = (src, sport), ("203.0.113.5", dport)
        if reply:
            a, b = b, a
        seg = dpkt.tcp.TCP(sport=a[1], dport=b[1], flags=dpkt.tcp.TH_SYN)
        ip = dpkt.ip.IP(src=socket.inet_aton(a[0]), dst=socket.inet_aton(b[0]), p=6, data=seg)
        return bytes(ip)

    cls = resolve_middlebox(SPEC)
    frames = [syn("10.0.0.1", 1000, 445), syn("10.0.0.1", 1000, 445, reply=True), syn("10.0.0.2", 1000, 445),
              syn("10.0.0.3", 1000, 445), syn("10.0.0.4", 1000, 445), syn("10.0.0.5", 1000, 445),
              syn("10.0.0.6", 1000, 80)]
    times = [0, 0.1, 1, 2, 3, 30, 31]
    packets = [Packet(i, int(t * 1e9), 101, f) for i, (f, t) in enumerate(zip(frames, times))]
    result = run_direct(cls(threshold=3, window=10), packets)
    assert [d for pid in sorted(result.outputs) for lt, d in result.outputs[pid] if lt == 147] == [
        b"port 445/tcp: 3 new flows within 10s, packet 3"]
    ports = {k: v for var in result.shared.variables if var.name.startswith("ports[") for k, v in var.dump().items()}
    assert ports == {(6, 445): (30.0, 1, 5), (6, 80): (31.0, 1, 1)}
    assert len(result.local[0]["flows"]) == 6
    assert len(run_direct(cls(max_flows=2), packets).local[0]["flows"]) == 2


def test_example_is_a_chain_member_as_the_guide_says():
    chain = build_middlebox("ftmbctl.middleboxes.chain:Chain", [f"boxes=nat,{SPEC}", "port-scan-counter.threshold=5"])
    assert chain.member("port-scan-counter").opts["threshold"] == 5
    shared = SharedState()
    chain.declare(shared)
    assert "port-scan-counter/ports[3]" in [v.name for v in shared.variables]


# ---------------------------------------------------------------- the API reference

def signature_text(fn: Any) -> str:
    """``(a: int, b: Any = MISSING) -> Any`` as ``inspect.signature`` gives it, without ``self``;
    annotations as written in the code, the ``MISSING`` sentinel by name."""
    sig = inspect.signature(fn)
    parts, star_done = [], False
    for p in list(sig.parameters.values())[1:]:
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        text = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
        star_done = star_done or p.kind is p.VAR_POSITIONAL
        if p.annotation is not p.empty:
            text += f": {p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)}"
        if p.default is not p.empty:
            text += " = " + ("MISSING" if p.default is MISSING else repr(p.default))
        parts.append(text)
    ret = sig.return_annotation
    arrow = "" if ret is sig.empty else f" -> {ret if isinstance(ret, str) else inspect.formatannotation(ret)}"
    return f"({', '.join(parts)}){arrow}"


def public_methods(cls: type) -> dict[str, Any]:
    return {name: fn for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def test_every_context_method_is_documented_with_its_signature():
    doc = DOC.read_text()
    methods = public_methods(Context)
    assert {"read", "get", "add", "set", "put", "pop", "contains", "update", "apply", "clock", "clock_ns", "random",
            "randint", "emit", "alert"} <= set(methods)
    missing = [f"ctx.{name}{signature_text(fn)}" for name, fn in methods.items()
               if f"`ctx.{name}{signature_text(fn)}`" not in doc]
    assert not missing, "undocumented or documented with another signature:\n" + "\n".join(missing)


def test_shared_declarations_are_documented_with_their_signatures():
    doc = DOC.read_text()
    missing = [f"shared.{name}{signature_text(getattr(SharedState, name))}" for name in DECLARATIONS
               if f"`shared.{name}{signature_text(getattr(SharedState, name))}`" not in doc]
    assert not missing, missing


def test_signature_text_is_what_inspect_gives():
    """The rendering only unquotes annotations and names the sentinel: otherwise it is inspect's."""
    for fn in list(public_methods(Context).values()) + [getattr(SharedState, n) for n in DECLARATIONS]:
        sig = inspect.signature(fn)
        plain = str(sig.replace(parameters=list(sig.parameters.values())[1:]))
        plain = re.sub(r"<object object at 0x[0-9a-f]+>", "MISSING", plain)
        assert plain.replace("'", "") == signature_text(fn)


def test_every_name_the_doc_uses_exists():
    doc = DOC.read_text()
    ctx = Context(0, {})
    for name in set(re.findall(r"(?<![\w.])ctx\.([A-Za-z_]\w*)", doc)):
        assert hasattr(ctx, name), f"the guide names ctx.{name}, which Context does not have"
    for name in set(re.findall(r"(?<![\w.])shared\.([A-Za-z_]\w*)", doc)):
        assert name in DECLARATIONS and hasattr(SharedState, name), f"shared.{name}"
    for name in set(re.findall(r"(?<![\w.])view\.([A-Za-z_]\w*)", doc)):
        assert hasattr(MapView, name), f"view.{name}"
    for dotted in set(re.findall(r"\bftmbctl(?:\.\w+)+", doc)):
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj: Any = importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        for attr in parts[cut:]:
            assert hasattr(obj, attr), f"the guide names {dotted}, which does not exist"
            obj = getattr(obj, attr)
    for command in set(re.findall(r"^ftmbctl ([a-z-]+)", doc, re.M)):
        assert cli(command, "--help").exit_code == 0, command


# ---------------------------------------------------------------- the classic bugs

def doc_bugs() -> list[tuple[str, str, set[str]]]:
    """(title, diff, invariants verify says) of every "### Bug" section of the guide."""
    doc = DOC.read_text()
    bugs = []
    for match in re.finditer(r"^### (Bug \d+: .+?)\n(.*?)(?=^##)", doc, re.M | re.S):
        title, body = match.groups()
        diff = re.search(r"```diff\n(.*?)```", body, re.S)
        says = re.search(r"\*\*verify says:\*\*(.*)", body)
        assert diff and says, f"section {title!r} needs a diff block and a 'verify says' line"
        bugs.append((title, diff.group(1), set(re.findall(r"`([a-z-]+)`", says.group(1)))))
    return bugs


def apply_diff(source: str, diff: str) -> str:
    """Replace each hunk's old lines (context and ``-``) by its new lines (context and ``+``)."""
    for hunk in re.split(r"^@@.*\n", diff, flags=re.M):
        old = [line[1:] for line in hunk.splitlines() if line[:1] in (" ", "-")]
        new = [line[1:] for line in hunk.splitlines() if line[:1] in (" ", "+")]
        before, after = "\n".join(old) + "\n", "\n".join(new) + "\n"
        assert source.count(before) == 1, f"the diff does not apply to the example:\n{before}"
        source = source.replace(before, after)
    return source


def test_the_guide_has_the_classic_bugs():
    titles = [title for title, _d, _s in doc_bugs()]
    assert len(titles) == 3 and any("bypasses the context" in t for t in titles)
    assert any("self" in t for t in titles) and any("clock" in t for t in titles)


@pytest.mark.parametrize("bug", doc_bugs(), ids=lambda bug: bug[0].split(":")[0].replace(" ", "-"))
def test_each_classic_bug_is_caught_as_the_guide_says(small_trace, tmp_path, bug):
    title, diff, invariants = bug
    buggy = tmp_path / "port_scan_counter.py"
    buggy.write_text(apply_diff(EXAMPLE.read_text(), diff))
    code, report = record_and_verify(small_trace, tmp_path / "run", f"{buggy}:PortScanCounter")
    assert code == 1, f"{title}: verify did not catch it"
    seen = {v["invariant"] for p in report["crash_points"] for v in p["violations"]}
    assert invariants and invariants <= seen, (title, invariants, seen)
    assert not any("error" in p for p in report["crash_points"])


def test_a_divergence_at_a_clock_value_is_worded_without_none(small_trace, tmp_path):
    title, diff, _says = next(bug for bug in doc_bugs() if "self" in bug[0])
    buggy = tmp_path / "port_scan_counter.py"
    buggy.write_text(apply_diff(EXAMPLE.read_text(), diff))
    _code, report = record_and_verify(small_trace, tmp_path / "run", f"{buggy}:PortScanCounter")
    messages = [v["message"] for p in report["crash_points"] for v in p["violations"]
                if v["invariant"] == "logged-prefix-state" and "clock" in v["message"]]
    assert messages, "the bug no longer diverges at a clock value: pick another example"
    assert not [m for m in messages if "access None" in m or "variable -" in m], messages[0]
