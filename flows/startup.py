"""A run's fixed costs at its start, paid at once: where no Prefect API is configured, the
temporary Prefect server (a subprocess: 10 s or more on a new database) starts in a thread
while Ray starts, or is joined, here. One after another, the flow paid both in turn: the
server on the flow's first call, Ray in its first task that needed it. The embedding actors
can start here too (:func:`cecq.pipeline.ray_pool.prestart`)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL

from cecq.encoders import preload_models
from cecq.pipeline import ray_pool
from cecq.pipeline.ray_pool import init_ray


def start_services(ray_address: str | None, models: Sequence[str] = ()) -> None:
    """Start the temporary Prefect API (unless ``PREFECT_API_URL`` names one) and Ray
    (``ray_address``, ``RAY_ADDRESS``, else a local one) together; return when both are up.
    The flow then finds both running: Prefect's server is one per process, started once.
    With ``models``, the embedding pool's actors start too, once Ray is up, and import what
    loading those models needs while the server starts (the embed stage takes them)."""
    failed: list[BaseException] = []
    thread = None
    if not PREFECT_API_URL.value():

        def start_server() -> None:
            try:
                SubprocessASGIServer().start()
            except BaseException as e:  # re-raised in the caller's thread, as the flow would raise it
                failed.append(e)

        thread = threading.Thread(target=start_server, name="prefect-server-start", daemon=True)
        thread.start()
    try:
        init_ray(ray_address)
        if models:
            ray_pool.prestart(functools.partial(preload_models, list(models)))
    finally:
        if thread is not None:
            thread.join()
    if failed:
        raise failed[0]
