"""When a failed task is worth retrying."""

from __future__ import annotations

from typing import Any

from cecq.config import ConfigError
from cecq.data import DataError
from cecq.decoder import DimensionMismatchError
from cecq.encoders import ModelNotFoundError
from cecq.ray_pool import ModelLoadError

PERMANENT_ERRORS = (DataError, ConfigError, ModelNotFoundError, ModelLoadError, DimensionMismatchError)


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
