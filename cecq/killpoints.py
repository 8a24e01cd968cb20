"""Kill points: named places in a run where a crash test stops the process for good.

With ``CECQ_KILL_AT=<point>=<marker file>`` in the environment (inherited by Ray's local
workers), the process that reaches ``<point>`` writes its pid to the marker file and then
waits there until it is killed, so a test that SIGKILLs the run when the marker appears knows
the run was at that point, not before or past it. Unset (always, outside tests), a kill point
is one dictionary lookup.
"""

from __future__ import annotations

import os
import time
from typing import Literal

ENV = "CECQ_KILL_AT"
KillPoint = Literal["embedding", "training", "compressing", "publishing"]
KILL_POINTS: tuple[KillPoint, ...] = ("embedding", "training", "compressing", "publishing")
_WAIT_S = 600.0  # longer than any test waits: the test kills the process well before


def kill_point(name: KillPoint) -> None:
    """Stop here (mark, then wait to be killed) if ``CECQ_KILL_AT`` names this point."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, marker = spec.partition("=")
    if point != name or not marker:
        return
    tmp = f"{marker}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, marker)  # the marker appears whole: a watcher reads the pid at once
    time.sleep(_WAIT_S)
    raise RuntimeError(f"kill point {name!r} was reached but the process was not killed within {_WAIT_S:.0f} s")
