"""What a wheel of ftmbctl holds: the bundled traces and the trace maker, as files, found through
importlib.resources (bundled.py). `.ci/run` also installs the wheel into a fresh virtual
environment and runs `ftmbctl demo` there."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ftmbctl.bundled import BUNDLED_TRACE, MAKE_TRACE, SMALL_TRACE

ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_files_are_the_checkouts_traces() -> None:
    for path, name in ((BUNDLED_TRACE, "mixed.pcap"), (SMALL_TRACE, "small.pcap"), (MAKE_TRACE, "make_trace.py")):
        assert path.read_bytes() == (ROOT / "traces" / name).read_bytes()


def test_the_wheel_ships_them(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    [wheel] = tmp_path.glob("ftmbctl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ("mixed.pcap", "small.pcap", "make_trace.py"):
            assert archive.read(f"ftmbctl/data/{name}") == (ROOT / "traces" / name).read_bytes()
        names = archive.namelist()
    assert not any(n.startswith(("tests/", "traces/", "benchmarks/")) for n in names)
    assert {"ftmbctl/lint/rules.py", "ftmbctl/htmlreport/page.py", "ftmbctl/middleboxes/nat.py"} <= set(names)
