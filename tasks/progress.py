"""Progress reporting from tasks into Prefect artifacts and logs."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact


def progress_reporter(what: str, unit: str = "shards") -> Callable[[int, int], None]:
    """A callback ``(done, total)`` that updates a progress artifact and logs rates."""
    logger = get_run_logger()
    artifact_id = create_progress_artifact(0.0, description=what)
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        update_progress_artifact(artifact_id, 100.0 * done / max(1, total))
        elapsed = time.perf_counter() - started
        logger.info("%s: %d/%d %s (%.2f %s/s)", what, done, total, unit, done / max(elapsed, 1e-9), unit)

    return report
