"""Progress of long steps, counted in units of work (documents, epochs), with rate and ETA.

The library reports through a plain ``(done, total)`` callback: a :class:`Meter` turns the
counts into :class:`ProgressUpdate` records for a sink, at most every
:data:`PROGRESS_SECONDS`. Who shows them is the caller's choice: :func:`console_sink` (a bar
on a terminal, periodic log lines otherwise) here, Prefect artifacts in ``tasks/``. A sink
installed with :func:`reporting_to` is found by code that runs deeper in the same process
(the flows' tasks, when the CLI runs them in-process).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

PROGRESS_SECONDS = 2.0  # a meter reports at most this often (and always the first and last count)
LOG_SECONDS = 10.0  # log lines (not a terminal) at most this often a step
BAR_WIDTH = 24

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressUpdate:
    """Where one step stands."""

    step: str  # e.g. "embed all-MiniLM-L6-v2"
    done: float
    total: float
    unit: str  # e.g. "documents", "epochs"
    elapsed: float  # seconds since the step's first count
    detail: str = ""  # e.g. "val loss 0.01234"

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def rate(self) -> float:
        """Units a second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before any work is done)."""
        if self.finished:
            return 0.0
        return (self.total - self.done) / self.rate if self.rate > 0 else None

    def counts(self) -> str:
        """``1,200/5,183 documents (23%), 85.2 documents/s, ETA 47 s``."""
        eta = self.eta
        left = "done" if self.finished else ("ETA ?" if eta is None else f"ETA {_duration(eta)}")
        done = f"{self.done:,.0f}" if float(self.done).is_integer() else f"{self.done:,.1f}"
        text = (
            f"{done}/{self.total:,.0f} {self.unit} ({100 * self.fraction:.0f}%), {self.rate:,.1f} {self.unit}/s, {left}"
        )
        return f"{text}; {self.detail}" if self.detail else text

    def line(self) -> str:
        return f"{self.step}: {self.counts()}"


ProgressSink = Callable[[ProgressUpdate], None]


def _duration(left: float) -> str:
    seconds = round(left)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Meter:
    """A ``(done, total[, detail])`` callback that sends :class:`ProgressUpdate` records to
    ``sink``, at most every ``interval`` seconds, and always the first and the final count."""

    def __init__(
        self,
        step: str,
        unit: str,
        sink: ProgressSink,
        interval: float = PROGRESS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.step, self.unit, self.sink, self.interval, self.clock = step, unit, sink, interval, clock
        self.started: float | None = None
        self.last: float | None = None
        self.finished = False

    def __call__(self, done: float, total: float, detail: str = "") -> None:
        now = self.clock()
        if self.started is None:
            self.started = now
        final = done >= total
        if self.finished or (not final and self.last is not None and now - self.last < self.interval):
            return
        self.last, self.finished = now, final
        self.sink(ProgressUpdate(self.step, done, total, self.unit, now - self.started, detail))


def log_sink(log: logging.Logger | Callable[[str], None] = logger, interval: float = LOG_SECONDS) -> ProgressSink:
    """Log lines, at most every ``interval`` seconds a step (and its last line)."""
    emit = log.info if isinstance(log, logging.Logger) else log
    last: dict[str, float] = {}

    def sink(update: ProgressUpdate) -> None:
        now = time.monotonic()
        if update.finished or now - last.get(update.step, -interval) >= interval:
            last[update.step] = now
            emit(update.line())

    return sink


class TerminalBar:
    """A one-line bar a step on a terminal, redrawn in place; the finished line stays."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.current: str | None = None
        self.lock = threading.Lock()

    def __call__(self, update: ProgressUpdate) -> None:
        filled = int(BAR_WIDTH * update.fraction)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        with self.lock:
            if self.current not in (None, update.step):
                self.stream.write("\n")  # another step: keep the last line of the one before
            self.current = None if update.finished else update.step
            end = "\n" if update.finished else ""
            self.stream.write(f"\r\033[K{update.step} [{bar}] {update.counts()}{end}")
            self.stream.flush()


def console_sink(stream: TextIO | None = None) -> ProgressSink:
    """A progress bar where a person watches (``stream`` is a terminal), else log lines on it."""
    stream = stream or sys.stderr
    if stream.isatty():
        return TerminalBar(stream)
    return log_sink(lambda line: print(line, file=stream, flush=True))


_installed: list[ProgressSink] = []


@contextmanager
def reporting_to(sink: ProgressSink) -> Iterator[None]:
    """Install ``sink`` for the steps run inside the block (see :func:`installed_sink`)."""
    _installed.append(sink)
    try:
        yield
    finally:
        _installed.remove(sink)


def installed_sink() -> ProgressSink | None:
    """The sink the innermost :func:`reporting_to` installed, or None."""
    return _installed[-1] if _installed else None
