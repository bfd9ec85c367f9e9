"""The durable job runner (docs/notifications.md): jobs exist only if their transaction
commits, keys make queueing idempotent, failures are retried with backoff and then
kept as failed, `Defer` and `run_after` delay, and concurrent runners never run one
job twice."""

import asyncio
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import text

from confide.jobs.mail import FolderMailer
from confide.jobs.runner import Defer, JobContext, JobRunner, Registry, backoff
from confide.store.repos.jobs import Job
from confide.store.uow import unit_of_work
from tests.personas import World

KIND = "test.job"


def make(world: World, registry: Registry, **kw: object) -> JobRunner:
    ctx = JobContext(
        world.runtime.db,
        world.runtime.settings,
        FolderMailer(world.runtime.settings.data_dir / "jobs-test-mail"),
    )
    return JobRunner(
        ctx,
        registry,
        practices=frozenset({world.practice_a}),
        backoff_base=0.01,
        backoff_cap=0.02,
        **kw,  # type: ignore[arg-type]
    )


def enqueue(world: World, payload: dict[str, object], **kw: object) -> bool:
    with unit_of_work(world.runtime.db) as uow:
        added = uow.jobs.enqueue(world.practice_a, KIND, payload, **kw)  # type: ignore[arg-type]
        uow.commit()
    return added


def state(world: World, n: int) -> tuple[int, bool, bool, str | None]:
    with unit_of_work(world.runtime.db, write=False) as uow:
        row = uow.conn.execute(
            text(
                "SELECT attempts, done_at IS NOT NULL, failed_at IS NOT NULL, last_error "
                "FROM jobs WHERE practice_id = :p AND payload = :payload"
            ),
            {"p": world.practice_a, "payload": f'{{"n":{n}}}'},
        ).one()
    return int(row[0]), bool(row[1]), bool(row[2]), row[3]


def test_jobs_exist_only_if_their_transaction_commits_and_keys_dedupe(world: World):
    ran: list[int] = []
    registry = Registry()

    @registry.handler(KIND)
    async def handle(_ctx: JobContext, job: Job) -> None:
        ran.append(int(job.payload["n"]))  # type: ignore[arg-type]

    with unit_of_work(world.runtime.db) as uow:
        uow.jobs.enqueue(world.practice_a, KIND, {"n": 1})
        uow.rollback()
    assert enqueue(world, {"n": 2}, dedupe_key=f"k-{world.practice_a}")
    assert not enqueue(world, {"n": 3}, dedupe_key=f"k-{world.practice_a}")
    asyncio.run(make(world, registry).drain())
    assert ran == [2]


def test_jobs_failures_retry_with_backoff_then_fail_and_stay(world: World):
    calls: Counter[int] = Counter()
    registry = Registry()

    @registry.handler(KIND)
    async def flaky(_ctx: JobContext, job: Job) -> None:
        n = int(job.payload["n"])  # type: ignore[arg-type]
        calls[n] += 1
        if n == 1 and calls[n] < 3:
            raise ConnectionError("smtp down")
        if n == 2:
            raise ValueError("never works")

    enqueue(world, {"n": 1})
    enqueue(world, {"n": 2}, max_attempts=3)
    runner = make(world, registry)
    for _ in range(40):
        asyncio.run(runner.drain())
        if calls[1] >= 3 and calls[2] >= 3:
            break
        threading.Event().wait(0.03)
    assert state(world, 1)[:3] == (3, True, False)
    attempts, done, failed, error = state(world, 2)
    assert (attempts, done, failed, error) == (3, False, True, "ValueError")
    assert calls[2] == 3  # never again once failed
    assert backoff(1, base=2, cap=300) <= 2.5 < backoff(5, base=2, cap=300)
    assert backoff(30, base=2, cap=300) <= 375


def test_jobs_run_after_and_defer_wait_without_using_attempts(world: World):
    seen: list[tuple[int, datetime]] = []
    registry = Registry()
    t0 = datetime.now(UTC).replace(microsecond=0)

    @registry.handler(KIND)
    async def later(_ctx: JobContext, job: Job) -> None:
        n = int(job.payload["n"])  # type: ignore[arg-type]
        now = datetime.now(UTC)
        if n == 2 and now < t0 + timedelta(minutes=30):
            raise Defer(t0 + timedelta(minutes=30))
        seen.append((n, now))

    with time_machine.travel(t0, tick=False) as clock:
        enqueue(world, {"n": 1}, run_after=t0 + timedelta(minutes=5))
        enqueue(world, {"n": 2})
        runner = make(world, registry)
        asyncio.run(runner.drain())
        assert seen == []
        clock.move_to(t0 + timedelta(minutes=5))
        asyncio.run(runner.drain())
        assert [n for n, _ in seen] == [1]
        clock.move_to(t0 + timedelta(minutes=30))
        asyncio.run(runner.drain())
    assert [n for n, _ in seen] == [1, 2]
    assert state(world, 2)[:2] == (1, True)  # the deferral was not an attempt


def test_jobs_concurrent_runners_run_each_job_once(world: World):
    runs: Counter[int] = Counter()
    lock = threading.Lock()
    registry = Registry()

    @registry.handler(KIND)
    async def count(_ctx: JobContext, job: Job) -> None:
        await asyncio.sleep(0.001)
        with lock:
            runs[int(job.payload["n"])] += 1  # type: ignore[arg-type]

    for n in range(200):
        enqueue(world, {"n": n})
    runners = [make(world, registry, concurrency=8) for _ in range(3)]
    threads = [threading.Thread(target=lambda r=r: asyncio.run(r.drain())) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(runs) == set(range(200))
    assert max(runs.values()) == 1


def test_jobs_unknown_kinds_are_left_for_a_runner_that_knows_them(world: World):
    with unit_of_work(world.runtime.db) as uow:
        uow.jobs.enqueue(world.practice_a, "test.other", {"n": 1})
        uow.commit()
    registry = Registry()
    registry.register(KIND, lambda _c, _j: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
    assert asyncio.run(make(world, registry).drain()) == 0
