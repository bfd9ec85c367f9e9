"""The durable job runner: jobs from the `jobs` table, run by kind through a registry.

    uow.jobs.enqueue(practice_id, "export.build", {"export_id": 7})   # in the change's
    uow.commit()                                                      # own transaction

    registry = Registry()
    @registry.handler("export.build")
    async def build_export(ctx: JobContext, job: Job) -> None: ...

Guarantees (docs/notifications.md):
- A job exists if and only if the transaction that queued it committed.
- Claims are leases (`lease`): a claimed job is invisible to other workers until its
  lease runs out. On PostgreSQL the claim uses FOR UPDATE SKIP LOCKED; on SQLite the
  write transaction is the single writer. Any number of runners (inside `serve`, or
  `confide worker` processes) share the table.
- A handler that raises is retried with exponential backoff (base * 2^(attempt-1),
  capped, with jitter) until `max_attempts`, then the job is marked failed and kept.
  `Defer(until)` reschedules without counting an attempt.
- At least once: a worker killed mid-job loses its lease and the job runs again, so
  handlers are idempotent (the notification handlers claim a unique row first).
- Logs carry the job id, kind and exception type only (payloads hold ids, but an
  exception text might quote data).
"""

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from anyio import to_thread

from confide.config import Settings
from confide.jobs.background import BackgroundLoop
from confide.jobs.mail import Mailer
from confide.store.clock import utcnow
from confide.store.db import Database
from confide.store.repos.jobs import Job
from confide.store.uow import listen_for_jobs, unit_of_work

log = logging.getLogger("confide.jobs")

RETENTION = timedelta(days=7)


@dataclass
class JobContext:
    """What handlers get besides the job: the database, settings and the mailer."""

    db: Database
    settings: Settings
    mailer: Mailer


Handler = Callable[[JobContext, Job], Awaitable[None]]


class Defer(Exception):
    """Raised by a handler: run this job again at `until` (not counted as an attempt)."""

    def __init__(self, until: datetime) -> None:
        super().__init__("deferred")
        self.until = until


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} is registered already")
        self._handlers[kind] = handler

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.register(kind, fn)
            return fn

        return register

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds before attempt `attempt + 1`: exponential, capped, 75-125 % jitter."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return float(delay * (0.75 + secrets.randbelow(501) / 1000))


class JobRunner(BackgroundLoop):
    name = "job runner"

    def __init__(
        self,
        ctx: JobContext,
        registry: Registry,
        *,
        worker_id: str | None = None,
        concurrency: int = 4,
        lease: timedelta = timedelta(seconds=60),
        poll_seconds: float = 1.0,
        backoff_base: float = 2.0,
        backoff_cap: float = 300.0,
        practices: frozenset[int] | None = None,
    ) -> None:
        super().__init__(poll_seconds=poll_seconds)
        self.ctx = ctx
        self.db = ctx.db
        self.registry = registry
        self.worker_id = (
            worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        self.concurrency = concurrency
        self.lease = lease
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        # None: every practice. A set: this runner's practices only (tenant-pinned
        # workers; tests that share a database).
        self.practices = practices
        self._next_prune = time.monotonic() + 60.0

    def listen(self) -> Callable[[], None]:
        return listen_for_jobs(self.db, self.wake)

    async def round(self) -> float | None:
        while await self.run_once():
            pass
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + 3600.0
            await to_thread.run_sync(self._prune)
        return await to_thread.run_sync(self._sleep_for)

    def _sleep_for(self) -> float:
        with unit_of_work(self.db, write=False) as uow:
            due = uow.job_board.next_due_at(self.registry.kinds, self.practices)
        if due is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, (due - utcnow()).total_seconds()))

    def _prune(self) -> None:
        with unit_of_work(self.db, write=True) as uow:
            uow.job_board.prune(utcnow() - RETENTION)
            uow.links.prune_requests(utcnow() - timedelta(days=1))
            uow.commit()

    # -- one round ---------------------------------------------------------------------

    def _claim(self) -> list[Job]:
        kinds = self.registry.kinds
        with unit_of_work(self.db, write=False) as uow:
            if not uow.job_board.has_due(kinds, self.practices):
                return []
        with unit_of_work(self.db, write=True) as uow:
            jobs = uow.job_board.claim(
                self.worker_id,
                kinds,
                limit=self.concurrency,
                lease=self.lease,
                practices=self.practices,
            )
            uow.commit()
        return jobs

    async def run_once(self) -> int:
        """Claim a batch of due jobs and run them; the number claimed."""
        jobs = await to_thread.run_sync(self._claim)
        if jobs:
            await asyncio.gather(*(self._execute(job) for job in jobs))
        return len(jobs)

    async def drain(self, *, max_rounds: int = 100_000) -> int:
        """Run until nothing is due (tests, `confide worker --once`)."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            if not n:
                break
            total += n
        return total

    async def _execute(self, job: Job) -> None:
        handler = self.registry.get(job.kind)
        try:
            if handler is None:
                raise LookupError("no handler")
            await handler(self.ctx, job)
        except asyncio.CancelledError:
            raise
        except Defer as d:
            await to_thread.run_sync(self._settle, job, "defer", d.until, "")
            return
        except Exception as exc:
            name = type(exc).__name__
            if job.attempts >= job.max_attempts:
                log.error("job %s (%s) failed for good: %s", job.id, job.kind, name)
                await to_thread.run_sync(self._settle, job, "fail", None, name)
            else:
                delay = backoff(job.attempts, base=self.backoff_base, cap=self.backoff_cap)
                log.warning(
                    "job %s (%s) attempt %s failed: %s; again in %.1fs",
                    job.id,
                    job.kind,
                    job.attempts,
                    name,
                    delay,
                )
                at = utcnow() + timedelta(seconds=delay)
                await to_thread.run_sync(self._settle, job, "retry", at, name)
            return
        await to_thread.run_sync(self._settle, job, "finish", None, "")

    def _settle(self, job: Job, how: str, at: datetime | None, error: str) -> None:
        with unit_of_work(self.db, write=True) as uow:
            board = uow.job_board
            if how == "finish":
                board.finish(job.id, self.worker_id)
            elif how == "defer" and at is not None:
                board.defer(job.id, self.worker_id, at=at)
            elif how == "retry" and at is not None:
                board.retry(job.id, self.worker_id, at=at, error=error)
            else:
                board.fail(job.id, self.worker_id, error=error)
            uow.commit()
