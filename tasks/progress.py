"""Progress of tasks as Prefect progress artifacts (refreshed every few seconds of work) and
log lines; where a caller in this process installed a sink (the CLI's bar), to it instead of
the log."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from cecq.progress import Meter, ProgressUpdate, installed_sink, log_sink


def progress_reporter(step: str, unit: str = "documents") -> Meter:
    """A ``(done, total[, detail])`` callback for ``step``, counted in ``unit``."""
    logger = get_run_logger()
    artifact_id = create_progress_artifact(0.0, description=step)
    local = installed_sink() or log_sink(lambda line: logger.info("%s", line))

    def sink(update: ProgressUpdate) -> None:
        update_progress_artifact(artifact_id, 100.0 * update.fraction, description=update.line())
        local(update)

    return Meter(step, unit, sink)
