"""A real local Ray for the tests of one module."""

from __future__ import annotations

import os
from collections.abc import Iterator


def local_ray(num_cpus: int) -> Iterator[None]:
    """Start a local Ray with ``num_cpus`` logical CPUs, yield, shut it down (a fixture's body)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
