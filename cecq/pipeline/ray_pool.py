"""Ray: the only module that knows about it, and it knows nothing of the pipeline. It is
handed its work: factories that build stateful workers (e.g. one that holds a base model),
one a group of jobs, and the jobs to run on those workers; or a function to run as remote
tasks. One pool of actors, sized for the cluster, runs the jobs of every group, longest
first; an actor builds a group's worker when it first gets one of its jobs and keeps it.
Failed jobs are retried, and resources are sized from the cluster (GPU actors where there
are GPUs)."""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cecq.errors import ShardFailedError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (units done, units in all): a job's ``size`` units, default 1
POLL_SECONDS = 2.0  # how often busy actors are asked for their progress within a job
# An idle actor takes a job of a group whose worker it holds over the longest pending job when
# that job's cost is within this fraction of the longest: it saves building a worker (a model
# load, seconds) and lengthens the tail by at most this share of one job.
AFFINITY_SLACK = 0.1

Worker = Callable[[Any], Any]
WorkerFactory = Callable[["ActorContext"], Worker]


class ActorStartError(RuntimeError):
    """The actors could not build a worker (e.g. a model that does not load): retrying cannot
    help. ``group`` names the jobs' group whose worker failed (None: the actor itself)."""

    def __init__(self, message: str, group: Hashable = None):
        super().__init__(message)
        self.group = group


class WorkerStartError(RuntimeError):
    """Raised in an actor whose worker factory failed (turned into :class:`ActorStartError`)."""

    def __init__(self, group: Hashable, message: str):
        super().__init__(group, message)
        self.group, self.message = group, message

    def __str__(self) -> str:
        return self.message


class PoolJob(Protocol):
    """A job for :func:`run_on_actors` / :func:`run_groups`: anything with a ``name`` (for
    messages). Optional attributes: ``size`` (e.g. documents), the units progress counts it
    as (default 1); ``cost``, what it takes to run, in any unit shared by the jobs (default
    ``size``), longest first; ``group``, which factory's worker runs it (:func:`run_groups`)."""

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


def job_cost(job: Any) -> float:
    """What a job takes to run, for longest-first order (its ``cost``, else its size)."""
    return float(getattr(job, "cost", job_size(job)))


@dataclass(frozen=True)
class Placed:
    """A job's result and where it ran (``job``: the job itself, set where it was sent)."""

    value: Any
    node: str
    pid: int
    job: Any = None


class Schedule:
    """The pending jobs, longest (by :func:`job_cost`) first, equal costs in the given order.

    Longest first, because the tail is what leaves workers idle: the last job to start should
    be a short one. An actor that holds a group's worker takes that group's longest job where
    its cost is within ``slack`` of the longest pending job's (:data:`AFFINITY_SLACK`).
    """

    def __init__(self, jobs: Sequence[Any], group_of: Callable[[Any], Hashable], slack: float = AFFINITY_SLACK):
        self.group_of, self.slack = group_of, slack
        self._seq = 0
        self._keys: list[tuple[float, int]] = []
        self._jobs: list[Any] = []
        for job in jobs:
            self.push(job)

    def __len__(self) -> int:
        return len(self._jobs)

    def push(self, job: Any) -> None:
        """Add a job (a retried one too) at its place in the order."""
        key = (-job_cost(job), self._seq)
        self._seq += 1
        i = bisect.bisect(self._keys, key)
        self._keys.insert(i, key)
        self._jobs.insert(i, job)

    def _near_head(self, held: Collection[Hashable]) -> int | None:
        """The index of the longest job of a held group close enough to the head, or None."""
        floor = -self._keys[0][0] * (1.0 - self.slack)
        for i, job in enumerate(self._jobs):
            if -self._keys[i][0] < floor:
                return None
            if self.group_of(job) in held:
                return i
        return None

    def assign(self, idle: Sequence[Collection[Hashable]]) -> tuple[int, Any]:
        """Which of the ``idle`` actors (each given as the groups it holds) runs which job: an
        actor that holds a group of a job near the head takes it, else the first idle actor
        that holds nothing (else the first) takes the head."""
        for a, held in enumerate(idle):
            if held and (i := self._near_head(held)) is not None:
                del self._keys[i]
                return a, self._jobs.pop(i)
        a = next((a for a, held in enumerate(idle) if not held), 0)
        del self._keys[0]
        return a, self._jobs.pop(0)


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


# CPU actors run one thread each: on 2 cores, two one-thread processes encoding MiniLM embedded
# 1,024 SciFact texts in 59.2 s and 60.3 s where one of two threads took 67.4 s and 72.6 s
# (1.14x and 1.20x, two side-by-side pairs): small matrices use one thread better than two.
CPU_ACTOR_THREADS = 1
# Memory an actor is given room for (Ray's "memory" of a node), so that a node with many CPUs
# and little memory holds fewer actors: a base model and one batch's activations.
ACTOR_MEMORY = 2 * 1024**3


def actor_shape(max_actors: int | None = None) -> ActorShape:
    """How many embedding actors, and of what size, the cluster holds.

    One actor a GPU where there are GPUs. On CPUs, actors of :data:`CPU_ACTOR_THREADS`
    threads that ask for 3/4 of a CPU a thread (on a 2-CPU machine, actors that took every
    CPU would starve the tasks that read and write shards), as many a node as its CPUs and
    memory (:data:`ACTOR_MEMORY` each) hold, and at least one.
    """
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    if gpus:
        n = gpus if max_actors is None else min(gpus, max_actors)
        threads = max(1, int(float(res.get("CPU", 1)) // gpus) - 1)
        return ActorShape(n, num_cpus=1, num_gpus=1, threads=threads)
    # Size by node, so that every node of a multi-node cluster gets actors.
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
    threads = CPU_ACTOR_THREADS
    n = sum(max(1, min(int(r["CPU"] // threads), int(r.get("memory", ACTOR_MEMORY) // ACTOR_MEMORY))) for r in nodes)
    n = n or 1
    if max_actors is not None:
        n = min(n, max_actors)
    return ActorShape(n, num_cpus=round(threads * 0.75, 2), num_gpus=0, threads=threads)


def _actor_class() -> Any:
    import ray

    # Two threads: ``progress`` is answered while ``run`` works (the pool sends one job at a time).
    @ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=2)
    class PoolActor:
        """Runs job after job; builds a group's worker (e.g. loading a model) on the first job
        of that group it gets, with the factory sent along, and keeps it for the rest of its
        life. It holds no factory of its own, so it can start before its jobs are known."""

        def __init__(self, threads: int):
            self.context = ActorContext(
                device="cuda" if ray.get_gpu_ids() else "cpu", threads=threads, report=self.report
            )
            self.workers: dict[Hashable, Worker] = {}
            self.partial = 0

        def warm(self, fn: Callable[[], Any]) -> None:
            """Run ``fn`` (e.g. heavy imports) before any job comes."""
            fn()

        def report(self, done: int) -> None:
            self.partial = int(done)

        def progress(self) -> int:
            """Units of the current job done so far."""
            return self.partial

        def run(self, group: Hashable, job: Any, factory: WorkerFactory) -> Placed:
            self.partial = 0
            worker = self.workers.get(group)
            if worker is None:
                try:
                    worker = factory(self.context)
                except Exception as e:  # any failure to build: the driver stops, retrying cannot help
                    raise WorkerStartError(group, f"{type(e).__name__}: {e}") from e
                self.workers[group] = worker
            value = worker(job)
            return Placed(value, ray.get_runtime_context().get_node_id(), os.getpid())

    return PoolActor


def _start_actor(actor_cls: Any, shape: ActorShape) -> Any:
    return actor_cls.options(num_cpus=shape.num_cpus, num_gpus=shape.num_gpus, scheduling_strategy="SPREAD").remote(
        shape.threads
    )


# Actors started ahead of their jobs (prestart), each with the shape it was sized to.
_prestarted: list[tuple[Any, ActorShape]] = []


def prestart(warm: Callable[[], Any] | None = None, max_actors: int | None = None) -> int:
    """Start the pool's actors now, before their jobs are known (e.g. while Prefect's API
    starts), each running ``warm()`` (e.g. heavy imports) at once; the next pool
    (:func:`run_groups`) takes them where its shape is theirs. Actors no pool takes are
    stopped by the next pool or task fan-out (:func:`release_prestarted`), so that they never
    hold CPUs that tasks wait for. Returns how many were started."""
    shape = actor_shape(max_actors)
    actor_cls = _actor_class()
    for _ in range(shape.count):
        actor = _start_actor(actor_cls, shape)
        if warm is not None:
            actor.warm.remote(warm)
        _prestarted.append((actor, shape))
    logger.info("started %d actors ahead of their jobs", shape.count)
    return shape.count


def release_prestarted() -> None:
    """Stop every prestarted actor that no pool took."""
    import ray

    while _prestarted:
        ray.kill(_prestarted.pop()[0])


def _take_prestarted(shape: ActorShape, n: int) -> list[Any]:
    """Up to ``n`` prestarted actors of ``shape``; the rest are stopped."""
    fits = [a for a, s in _prestarted if s == shape]
    _prestarted[:] = [(a, s) for a, s in _prestarted if s != shape] + [(a, shape) for a in fits[n:]]
    release_prestarted()  # what is left over
    return fits[:n]


def run_on_actors(
    make_worker: WorkerFactory,
    jobs: Sequence[PoolJob],
    label: str = "",
    max_retries: int = 2,
    progress: Progress | None = None,
    max_actors: int | None = None,
) -> list[Placed]:
    """Run every job on a pool of actors, each holding a worker ``make_worker`` built once
    (:func:`run_groups` with one group)."""
    return run_groups(
        {None: make_worker},
        jobs,
        label,
        max_retries,
        {None: progress} if progress else None,
        max_actors,
        group_of=lambda job: None,
    )


def _group_of(job: Any) -> Hashable:
    return getattr(job, "group", None)


def run_groups(
    factories: Mapping[Hashable, WorkerFactory],
    jobs: Sequence[PoolJob],
    label: str = "",
    max_retries: int = 2,
    progress: Mapping[Hashable, Progress] | None = None,
    max_actors: int | None = None,
    group_of: Callable[[Any], Hashable] = _group_of,
) -> list[Placed]:
    """Run every job, of every group, on one pool of actors sized for the cluster; return the
    results (in completion order) with where each ran.

    ``factories[group]`` builds the worker that runs the group's jobs (``group_of(job)``, the
    job's ``group`` by default); an actor builds it on its first job of that group and keeps
    it. Jobs start longest first (:class:`Schedule`), whatever their group, so no actor waits
    while jobs remain. ``progress[group]`` counts that group's jobs.

    A job that fails is retried (on any actor) up to ``max_retries`` times. An actor that
    dies hands its job to the survivors; a new actor is started only when none is left,
    because one waiting for the resources of a lost node would hang the job. A worker that
    fails to build raises :class:`ActorStartError` (naming its group) at once.
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    if not jobs:
        return []
    if missing := {group_of(j) for j in jobs} - set(factories):
        raise ValueError(f"jobs of groups {sorted(map(str, missing))} have no worker factory")
    shape = actor_shape(max_actors)
    n = min(shape.count, len(jobs))
    actor_cls = _actor_class()
    factories = dict(factories)

    def new_actor() -> Any:
        return _start_actor(actor_cls, shape)

    actors = _take_prestarted(shape, n)
    actors += [new_actor() for _ in range(n - len(actors))]
    held: dict[Any, set[Hashable]] = {a: set() for a in actors}  # the groups each actor has built (or is building)
    logger.info("%s: %d jobs on %d actors (%s cpus, %s gpus each)", label, len(jobs), n, shape.num_cpus, shape.num_gpus)
    schedule = Schedule(jobs, group_of)
    attempts: dict[int, int] = {}
    idle = list(actors)
    inflight: dict[Any, tuple[Any, PoolJob]] = {}
    results: list[Placed] = []
    total: dict[Hashable, int] = {}
    for j in jobs:
        total[group_of(j)] = total.get(group_of(j), 0) + job_size(j)
    done = dict.fromkeys(total, 0)
    progress = {g: p for g, p in (progress or {}).items() if p is not None and g in total}

    def report(partial: dict[Hashable, int] | None = None) -> None:
        for g, p in progress.items():
            p(done[g] + (partial or {}).get(g, 0), total[g])

    try:
        while schedule or inflight:
            while schedule and idle:
                a, job = schedule.assign([held[x] for x in idle])
                actor = idle.pop(a)
                group = group_of(job)
                held[actor].add(group)
                inflight[actor.run.remote(group, job, factories[group])] = (actor, job)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS if progress else None)
            if not ready:
                if progress:
                    report(_partial(list(inflight.values()), group_of))
                continue
            [ref] = ready
            actor, job = inflight.pop(ref)
            group = group_of(job)
            try:
                results.append(replace(ray.get(ref), job=job))
                done[group] += job_size(job)
                idle.append(actor)
            except (RayActorError, RayTaskError) as e:
                if isinstance(cause := getattr(e, "cause", None), WorkerStartError):
                    raise ActorStartError(cause.message, group) from e
                if isinstance(e, RayActorError) and e.actor_init_failed:
                    raise ActorStartError(_cause(e)) from e
                attempts[id(job)] = attempts.get(id(job), 0) + 1
                where = label if group is None else f"{label} {group}".strip()
                if attempts[id(job)] > max_retries:
                    raise ShardFailedError(f"{job.name} failed {attempts[id(job)]} times ({where}): {e}") from e
                logger.warning("%s failed (%s, attempt %d), retrying: %s", job.name, where, attempts[id(job)], e)
                schedule.push(job)
                if isinstance(e, RayTaskError):
                    idle.append(actor)  # the job failed, the actor is fine
                elif not idle and not inflight:
                    logger.warning("%s: no actor left, starting a new one", label)
                    actors.append(new_actor())
                    held[actors[-1]] = set()
                    idle.append(actors[-1])
            if progress:
                report()
    finally:
        for a in actors:
            ray.kill(a)
    return results


def _partial(busy: list[tuple[Any, Any]], group_of: Callable[[Any], Hashable]) -> dict[Hashable, int]:
    """Units done, by group, of the jobs that busy ``(actor, job)`` pairs are running (none
    where an actor does not answer)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    refs = [a.progress.remote() for a, _ in busy]
    try:
        counts = ray.get(refs, timeout=POLL_SECONDS)
    except (GetTimeoutError, RayActorError):
        return {}
    out: dict[Hashable, int] = {}
    for (_, job), units in zip(busy, counts):
        out[group_of(job)] = out.get(group_of(job), 0) + int(units)
    return out


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

    release_prestarted()  # idle actors would hold the CPUs these tasks wait for
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
