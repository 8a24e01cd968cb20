"""A run's fixed costs at its start, paid at once: where no Prefect API is configured, the
temporary Prefect server (a subprocess: 10 s or more on a new database) starts in a thread
while Ray starts, or is joined, here. One after another, the flow paid both in turn: the
server on the flow's first call, Ray in its first task that needed it."""

from __future__ import annotations

import threading

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL

from cecq.pipeline.ray_pool import init_ray


def start_services(ray_address: str | None) -> None:
    """Start the temporary Prefect API (unless ``PREFECT_API_URL`` names one) and Ray
    (``ray_address``, ``RAY_ADDRESS``, else a local one) together; return when both are up.
    The flow then finds both running: Prefect's server is one per process, started once."""
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
    finally:
        if thread is not None:
            thread.join()
    if failed:
        raise failed[0]
