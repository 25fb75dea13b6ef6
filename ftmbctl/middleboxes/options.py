"""Parsers for ``--mb-opt`` values that several middleboxes share (each raises ValueError with a
sentence the CLI shows as a usage error)."""

from __future__ import annotations

from typing import Any


def parse_seconds(text: Any) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{text} is not a positive number of seconds")
    return value


def parse_port(text: Any) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not in 1..65535")
    return port


def parse_new_tcp(text: Any) -> str:
    """Which TCP segments may open a connection: ``syn`` (a SYN without ACK) or ``any``."""
    value = str(text).strip().lower()
    if value not in ("syn", "any"):
        raise ValueError(f"new_tcp must be syn or any, not {text!r}")
    return value


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def parse_count(text: Any) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def parse_positive(text: Any) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not at least 1")
    return value
