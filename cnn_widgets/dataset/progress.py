"""Progress of a pass over a data set: an ipywidgets bar and label in a notebook, one rewritten text line
on a terminal, nothing otherwise (a log file or a test run gets no carriage-return noise)."""

from __future__ import annotations

import sys
import time
from typing import Any

_INTERVAL = 0.25  # seconds between redraws: drawing must cost nothing next to the model


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel (where widgets display)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def describe(done: int, total: int | None, seconds: float, what: str) -> str:
    """``"1,234 / 5,000 images · 812 images/s"`` (no total when unknown)."""
    rate = done / seconds if seconds > 0 else 0.0
    of = f" / {total:,}" if total is not None else ""
    return f"{done:,}{of} {what} · {rate:,.0f} {what}/s"


class Progress:
    """Reports images done; ``update`` redraws at most every 0.25 s, ``close`` draws the final state."""

    def __init__(self, enabled: bool, total: int | None, title: str = "scan", what: str = "images") -> None:
        self.total, self.title, self.what = total, title, what
        self.done = 0
        self.start = time.perf_counter()
        self.last = 0.0
        self.bar: Any = None
        self.label: Any = None
        self.text = False
        if not enabled:
            return
        if in_notebook():
            import ipywidgets as W
            from IPython.display import display

            self.bar = W.IntProgress(value=0, min=0, max=max(total or 1, 1), description=title)
            self.label = W.Label(value="")
            display(W.HBox([self.bar, self.label]))
        else:
            self.text = sys.stderr.isatty()

    def update(self, done: int, force: bool = False) -> None:
        """Record ``done`` images so far; redraw if enough time has passed (or ``force``)."""
        self.done = done
        now = time.perf_counter()
        if not force and now - self.last < _INTERVAL:
            return
        self.last = now
        line = describe(done, self.total, now - self.start, self.what)
        if self.bar is not None:
            self.bar.max = max(self.total or done, done, 1)
            self.bar.value = done
            self.label.value = line
        elif self.text:
            sys.stderr.write(f"\r{self.title}: {line}")
            sys.stderr.flush()

    def close(self, ok: bool = True) -> None:
        """Draw the final count; the bar turns green on success, red on an error."""
        self.update(self.done, force=True)
        if self.bar is not None:
            self.bar.bar_style = "success" if ok else "danger"
        elif self.text:
            sys.stderr.write("\n")
