"""Sizes and counts as people read them, the same in the CLI and the window."""

from __future__ import annotations

_GIB = 1 << 30
_MIB = 1 << 20


def format_bytes(n: int) -> str:
    """33.0 MiB, 116.4 GiB: binary units, one decimal."""
    return f"{n / _GIB:.1f} GiB" if n >= _GIB else f"{max(n / _MIB, 0.1):.1f} MiB"


def format_params(n: int) -> str:
    """8.6 M, 196.8 B parameters."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(n)
