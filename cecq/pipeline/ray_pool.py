"""Ray: the only module that knows about it, and it knows nothing of the pipeline. It is
handed its work: a factory that builds a stateful worker once per actor (e.g. one that
holds a base model) and the jobs to run on those workers, or a function to run as remote
tasks. Work goes to whichever actor is idle, failed jobs are retried, and resources are
sized from the cluster (GPU actors where there are GPUs)."""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cecq.errors import ShardFailedError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (units done, units in all): a job's ``size`` units, default 1
POLL_SECONDS = 2.0  # how often busy actors are asked for their progress within a job


class ActorStartError(RuntimeError):
    """The actors could not build their worker (e.g. a model that does not load): retrying cannot help."""


class PoolJob(Protocol):
    """A job for :func:`run_on_actors`: anything with a ``name`` (for messages); a ``size``
    attribute (e.g. documents), where it has one, is the units progress counts it as."""

    @property
    def name(self) -> str: ...


def _ignore(done: int) -> None:
    return None


@dataclass(frozen=True)
class ActorContext:
    """What a worker factory is told about the actor it runs in. ``report(done)`` tells the
    pool how many units of the current job are done (progress within a job)."""

    device: str  # "cuda" where the actor holds a GPU, else "cpu"
    threads: int  # CPU threads the actor may use
    report: Callable[[int], None] = _ignore


def job_size(job: Any) -> int:
    """The units a job counts as in progress reports."""
    return int(getattr(job, "size", 1))


@dataclass(frozen=True)
class Placed:
    """A job's result and where it ran."""

    value: Any
    node: str
    pid: int


def _cause(error: Exception) -> str:
    """The last line of a remote traceback: the exception that actually happened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next(
        (line for line in reversed(lines) if "Error" in line or "Exception" in line),
        lines[-1] if lines else repr(error),
    )


def init_ray(address: str | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
    if address is None:
        # "local" always starts a new instance: a bare ray.init() would join whatever
        # cluster was last started with `ray start` on this machine.
        kwargs["include_dashboard"] = False
        address = "local"
    ray.init(address=address, **kwargs)
    logger.info("ray: %s", ray.cluster_resources())


def ray_running() -> bool:
    """Whether this process is connected to a Ray cluster."""
    import ray

    return ray.is_initialized()


def shutdown_ray() -> None:
    import ray

    ray.shutdown()


def alive_cpu_nodes() -> int:
    """Nodes of the connected cluster that are alive and have CPUs."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0)


@dataclass(frozen=True)
class ActorShape:
    count: int
    num_cpus: float
    num_gpus: float
    threads: int


def actor_shape(max_actors: int | None = None) -> ActorShape:
    """How many embedding actors, and of what size, the cluster holds.

    One actor a GPU where there are GPUs. On CPUs, actors of up to 4 threads that ask for
    3/4 of a CPU a thread: on a 2-CPU machine, actors that took every CPU would starve the
    tasks that read and write shards.
    """
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus:
        n = gpus if max_actors is None else min(gpus, max_actors)
        threads = max(1, int(float(res.get("CPU", 1)) // gpus) - 1)
        return ActorShape(n, num_cpus=1, num_gpus=1, threads=threads)
    # Size by node, so that every node of a multi-node cluster gets actors.
    node_cpus = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    node_cpus = [c for c in node_cpus if c > 0] or [float(res.get("CPU", 1))]
    threads = max(1, min(4, int(min(node_cpus))))
    n = sum(max(1, int(c // threads)) for c in node_cpus)
    if max_actors is not None:
        n = min(n, max_actors)
    return ActorShape(n, num_cpus=round(threads * 0.75, 2), num_gpus=0, threads=threads)


def _actor_class() -> Any:
    import ray

    # Two threads: ``progress`` is answered while ``run`` works (the pool sends one job at a time).
    @ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
    class PoolActor:
        """Builds one worker for its lifetime (e.g. loading a model once) and runs job after job."""

        def __init__(self, make_worker: Callable[[ActorContext], Callable[[Any], Any]], threads: int):
            device = "cuda" if ray.get_gpu_ids() else "cpu"
            self.partial = 0
            self.worker = make_worker(ActorContext(device=device, threads=threads, report=self.report))

        def report(self, done: int) -> None:
            self.partial = int(done)

        def progress(self) -> int:
            """Units of the current job done so far."""
            return self.partial

        def run(self, job: Any) -> Placed:
            self.partial = 0
            value = self.worker(job)
            return Placed(value, ray.get_runtime_context().get_node_id(), os.getpid())

    return PoolActor


def run_on_actors(
    make_worker: Callable[[ActorContext], Callable[[Any], Any]],
    jobs: Sequence[PoolJob],
    label: str = "",
    max_retries: int = 2,
    progress: Progress | None = None,
    max_actors: int | None = None,
) -> list[Placed]:
    """Run every job on a pool of actors, each holding a worker ``make_worker`` built once;
    return the results (in completion order) with where each ran.

    A job that fails is retried (on any actor) up to ``max_retries`` times. An actor that
    dies hands its job to the survivors; a new actor is started only when none is left,
    because one waiting for the resources of a lost node would hang the job. Actors that
    fail to build their worker raise :class:`ActorStartError` at once.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    if not jobs:
        return []
    shape = actor_shape(max_actors)
    n = min(shape.count, len(jobs))
    actor_cls = _actor_class()

    def new_actor() -> Any:
        return actor_cls.options(num_cpus=shape.num_cpus, num_gpus=shape.num_gpus, scheduling_strategy="SPREAD").remote(
            make_worker, shape.threads
        )

    actors = [new_actor() for _ in range(n)]
    logger.info("%s: %d jobs on %d actors (%s cpus, %s gpus each)", label, len(jobs), n, shape.num_cpus, shape.num_gpus)
    pending: deque[PoolJob] = deque(jobs)
    attempts: dict[int, int] = {}
    idle = list(actors)
    inflight: dict[Any, tuple[Any, PoolJob]] = {}
    results: list[Placed] = []
    total, done = sum(job_size(j) for j in jobs), 0
    try:
        while pending or inflight:
            while pending and idle:
                actor, job = idle.pop(), pending.popleft()
                inflight[actor.run.remote(job)] = (actor, job)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS if progress else None)
            if not ready:
                if progress:
                    progress(done + _partial([a for a, _ in inflight.values()]), total)
                continue
            [ref] = ready
            actor, job = inflight.pop(ref)
            try:
                results.append(ray.get(ref))
                done += job_size(job)
                idle.append(actor)
            except (RayActorError, RayTaskError) as e:
                if isinstance(e, RayActorError) and e.actor_init_failed:
                    raise ActorStartError(_cause(e)) from e
                attempts[id(job)] = attempts.get(id(job), 0) + 1
                if attempts[id(job)] > max_retries:
                    raise ShardFailedError(f"{job.name} failed {attempts[id(job)]} times ({label}): {e}") from e
                logger.warning("%s failed (%s, attempt %d), retrying: %s", job.name, label, attempts[id(job)], e)
                pending.append(job)
                if isinstance(e, RayTaskError):
                    idle.append(actor)  # the job failed, the actor is fine
                elif not idle and not inflight:
                    logger.warning("%s: no actor left, starting a new one", label)
                    actors.append(new_actor())
                    idle.append(actors[-1])
            if progress:
                progress(done, total)
    finally:
        for a in actors:
            ray.kill(a)
    return results


def _partial(busy: list[Any]) -> int:
    """Units done of the jobs that busy actors are running (0 for one that does not answer)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    refs = [a.progress.remote() for a in busy]
    try:
        return sum(ray.get(refs, timeout=POLL_SECONDS))
    except (GetTimeoutError, RayActorError):
        return 0


def run_tasks(
    fn: Callable[..., dict],
    jobs: Sequence[tuple],
    num_cpus: float = 1.0,
    max_retries: int = 2,
    progress: Progress | None = None,
    sizes: Sequence[int] | None = None,
) -> list[dict]:
    """Run ``fn(*job)`` for every job as Ray tasks (retried on failure); return the results.
    ``progress`` counts a job as its ``sizes`` entry (default 1) and is called at least every
    :data:`POLL_SECONDS` while tasks run."""
    import ray

    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=True)(fn)
    refs = [remote.remote(*job) for job in jobs]
    size = dict(zip(refs, sizes or [1] * len(refs)))
    total, finished = sum(size.values()), 0
    results, waiting = [], list(refs)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS if progress else None)
        if done:
            results.append(ray.get(done[0]))
            finished += size[done[0]]
        if progress:
            progress(finished, total)
    return results


def cpus_per_task() -> float:
    import ray

    return max(0.25, min(1.0, math.floor(float(ray.cluster_resources().get("CPU", 1))) / 2))
