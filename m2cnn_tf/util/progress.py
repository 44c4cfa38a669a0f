"""Progress of long work: a tqdm bar on a terminal, one plain line per interval in a log.

A tqdm bar redraws itself with carriage returns; written to a file (CI, ``> log``, a notebook
cell) every redraw stays in it, so a log fills with bar fragments. ``progress`` therefore gives
a bar only when the stream is a terminal, and otherwise a ``LogLines`` reporter with tqdm's
interface (``update``, ``set_postfix``, ``write``, ``close``, iteration) that prints one
complete line every ``LOG_INTERVAL_SECONDS`` and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Optional

from tqdm import tqdm

# A line a log file can afford: a 20-minute build writes 40 of them.
LOG_INTERVAL_SECONDS = 30.0


def is_terminal(stream) -> bool:
    """True when ``stream`` is an interactive terminal (where a redrawn bar is readable)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class LogLines:
    """tqdm's interface for a log: a plain line every ``interval`` seconds and at the end."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None,
                 desc: str = "", unit: str = "it", initial: int = 0, file=None,
                 interval: float = LOG_INTERVAL_SECONDS):
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.initial = initial
        self.file = file or sys.stderr
        self.interval = interval
        self.postfix = ""
        self.started = self.last_print = time.monotonic()
        self.printed_n = initial

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        return tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                 postfix=self.postfix or None, ncols=0,
                                 initial=self.initial).strip()

    def _print(self) -> None:
        print(self._line(), file=self.file, flush=True)
        self.last_print = time.monotonic()
        self.printed_n = self.n

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last_print >= self.interval:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, message: str, file=None) -> None:
        print(message, file=file or self.file, flush=True)

    def close(self) -> None:
        if self.n != self.printed_n:
            self._print()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
             unit: str = "it", initial: int = 0, quiet: bool = False, file=None, **bar_options):
    """A progress reporter for ``total`` units (or over ``iterable``).

    Args:
        iterable: optional items to iterate over, counting one unit each.
        total: units expected (None: unknown).
        desc: what is being done ("building", "evaluating validation").
        unit: the unit's name ("img", "step").
        initial: units already done (a resumed run).
        quiet: report nothing.
        file: the stream; standard error by default.
        **bar_options: further tqdm options for the terminal bar (``bar_format``, …).

    Returns:
        A tqdm bar on a terminal (or a disabled one when quiet), else ``LogLines``.
    """
    file = file or sys.stderr
    if quiet or is_terminal(file):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
                    disable=quiet, dynamic_ncols=True, **bar_options)
    return LogLines(iterable, total, desc, unit, initial, file)


def write(message: str, file=None) -> None:
    """A message that does not break a terminal bar being drawn."""
    tqdm.write(message, file=file or sys.stderr)
