"""When a failed task is worth retrying."""

from __future__ import annotations

from typing import Any

from cecq.errors import PERMANENT_ERRORS


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry transient failures (storage, Ray), not bad input
    or configuration, which fails the same way every time."""
    try:
        state.result()
    except PERMANENT_ERRORS:
        return False
    except BaseException:
        return True
    return True
