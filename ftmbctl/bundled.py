"""What ships inside the package besides code: the sample traces and the script that makes
traces of any size (ftmbctl/data/). In a source checkout they are links to traces/; a wheel holds
copies, found the same way through importlib.resources, so `ftmbctl demo` and `ftmbctl bench`
work wherever ftmbctl is installed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled(name: str) -> Path:
    """The path of a bundled file (which may be missing from a broken installation: callers
    that read it report that as for any capture)."""
    return Path(str(resources.files("ftmbctl").joinpath("data", name)))


BUNDLED_TRACE = bundled("mixed.pcap")  # the demo's and the benchmark's default trace
SMALL_TRACE = bundled("small.pcap")
MAKE_TRACE = bundled("make_trace.py")  # traces/make_trace.py: a capture of any size from a seed
