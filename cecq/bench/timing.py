"""Side-by-side timing for ``cecq bench perf``: interleaved repeats, medians, ratios.

The machine is shared and noisy, so variants are never timed in separate blocks: each
repeat runs every variant once (alternating the order), and ratios compare medians.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """One timed variant: ``items`` processed per run, wall seconds of every repeat."""

    measurement: str
    variant: str
    items: int
    unit: str
    seconds: list[float]
    what: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.items / max(self.median_s, 1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median_s": self.median_s, "rate": self.rate}


@dataclass
class Ratio:
    """``numerator``'s rate over ``denominator``'s (both of one measurement); > 1 is faster."""

    measurement: str
    numerator: str
    denominator: str
    ratio: float
    target: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.target is None else bool(self.ratio >= self.target)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def rate_text(rate: float) -> str:
    """A rate to three significant figures, with thousands separators when large (a 10M-code
    scan answers 0.2 queries a second: rounding to integers printed 0)."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def interleaved(variants: dict[str, Callable[[int], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of ``variants[name](repeat)`` for every repeat, variants interleaved
    (order reversed every other repeat, so neither always runs first)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            started = time.perf_counter()
            variants[name](r)
            times[name].append(time.perf_counter() - started)
    return times


def ratio(
    figures: dict[str, Figure], numerator: str, denominator: str, target: float | None = None, note: str = ""
) -> Ratio:
    num, den = figures[numerator], figures[denominator]
    return Ratio(num.measurement, numerator, denominator, num.rate / den.rate, target, note)


def run_child(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a measuring child process and return its stdout; a failed child raises, naming
    ``what`` with the end of its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def child_json(cmd: list[str], what: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """:func:`run_child`, with the child's last stdout line parsed as JSON (its result)."""
    return json.loads(run_child(cmd, what, env).strip().splitlines()[-1])
