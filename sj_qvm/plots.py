"""The figures' shared look: the style of each current mode and a headless matplotlib."""
from __future__ import annotations

__all__ = ["CURRENT_STYLE", "pyplot"]

CURRENT_STYLE = {"instant": dict(color="#4daf4a", marker="s", label="instant current"),
                  "expected": dict(color="#ff7f00", marker="o", label="expected current (QVM)")}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
