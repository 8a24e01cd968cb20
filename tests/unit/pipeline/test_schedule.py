"""The pool's schedule (:class:`cecq.pipeline.ray_pool.Schedule`), without Ray: longest jobs
of every group first, affinity to the groups an actor holds, and, simulated on a pool of
actors, that no actor idles while jobs remain and a second model's jobs start before the
first model's are all done (they would not, model after model)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from cecq.pipeline.ray_pool import Schedule


@dataclass(frozen=True)
class Job:
    name: str
    group: str
    cost: float


def group_of(job: Job) -> str:
    return job.group


def jobs_of(group: str, costs: list[float]) -> list[Job]:
    return [Job(f"{group}{i}", group, c) for i, c in enumerate(costs)]


def simulate(schedule: Schedule, actors: int) -> tuple[list[tuple[float, float, int, Job]], list[set[str]]]:
    """Run the schedule on ``actors`` simulated actors (a job takes its cost in time, a
    group's first job on an actor no extra); return (start, end, actor, job) per job and the
    groups each actor built."""
    held: list[set[str]] = [set() for _ in range(actors)]
    idle, running, runs, now = list(range(actors)), [], [], 0.0
    while schedule or running:
        while schedule and idle:
            a, job = schedule.assign([held[i] for i in idle])
            actor = idle.pop(a)
            held[actor].add(job.group)
            heapq.heappush(running, (now + job.cost, actor, job.name, job))
            runs.append((now, now + job.cost, actor, job))
        now, actor, _, _ = heapq.heappop(running)
        idle.append(actor)
    return runs, held


def test_longest_first_whatever_the_group_and_retries_keep_their_place():
    s = Schedule([*jobs_of("a", [1, 5, 3]), *jobs_of("b", [4, 2])], group_of, slack=0.0)
    order = []
    while s:
        order.append(s.assign([set()])[1])
    assert [j.cost for j in order] == [5, 4, 3, 2, 1]
    s = Schedule(jobs_of("a", [5, 1]), group_of)
    s.push(Job("retried", "b", 3))
    assert [s.assign([set()])[1].name for _ in range(3)] == ["a0", "retried", "a1"]


def test_an_actor_takes_a_job_of_a_model_it_holds_when_it_is_as_long_as_the_longest():
    s = Schedule([Job("a", "a", 100), Job("b", "b", 95), Job("b2", "b", 50)], group_of, slack=0.1)
    assert s.assign([{"b"}]) == (0, Job("b", "b", 95))  # within 10% of the longest: no load of a
    assert s.assign([{"b"}]) == (0, Job("a", "a", 100))  # b's next is half as long: longest first
    # Of several idle actors, one that holds the job's model takes it; else one that holds nothing.
    s = Schedule([Job("a", "a", 10)], group_of)
    assert s.assign([{"b"}, {"a"}]) == (1, Job("a", "a", 10))
    s = Schedule([Job("c", "c", 10)], group_of)
    assert s.assign([{"b"}, set()]) == (1, Job("c", "c", 10))


def test_one_pool_keeps_every_actor_busy_and_starts_model_b_before_model_a_is_done():
    # Two models on 3 actors, like MiniLM (shards of 100 documents, cost 1 a document) and a
    # cheaper model (cost 0.5). Model after model, b would wait for a's last shard.
    a, b = jobs_of("a", [100] * 4 + [40]), jobs_of("b", [50] * 4 + [20])
    runs, held = simulate(Schedule([*a, *b], group_of), actors=3)

    assert len(runs) == len(a) + len(b)
    last_a_end = max(end for _, end, _, j in runs if j.group == "a")
    assert min(start for start, _, _, j in runs if j.group == "b") < last_a_end
    # No actor idles while jobs remain: every job starts the moment an actor is free, so
    # the starts are exactly the times at which some actor finished (or 0).
    ends = {0.0} | {end for _, end, _, _ in runs}
    assert all(start in ends for start, _, _, _ in runs)
    for start, _, _, _ in runs:
        busy = sum(1 for s, e, _, _ in runs if s <= start < e)
        assert busy == 3 or start >= max(s for s, _, _, _ in runs), "an actor idled while jobs waited"
    # Each actor builds a model at most once, and the makespan beats model after model
    # (the same schedule run on a's jobs, then on b's: each model's tail leaves actors idle).
    assert all(len(h) <= 2 for h in held)
    makespan = max(end for _, end, _, _ in runs)
    after = max(e for _, e, _, _ in simulate(Schedule(a, group_of), 3)[0])
    after += max(e for _, e, _, _ in simulate(Schedule(b, group_of), 3)[0])
    assert makespan < after  # 240 against 200 + 100
