"""The durable job queue: `JobQueue` adds jobs inside the caller's transaction;
`JobBoard` is the runner's side (claim, finish, retry), across practices.

Claiming takes a lease: the claim transaction marks the rows `locked_until = now +
lease` and commits, the handler runs outside any transaction, and the finish is
conditional on still holding the lease (`locked_by`). A worker that dies mid-job loses
its lease when it runs out, and another worker takes the job again, so handlers must be
idempotent (jobs/runner.py). On PostgreSQL the claim reads with FOR UPDATE SKIP LOCKED,
so workers never wait on each other's rows; on SQLite the write transaction (BEGIN
IMMEDIATE, one writer at a time, across processes too) does the same job.
"""

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from confide.domain.ids import PracticeId
from confide.store.clock import aware, utcnow
from confide.store.tables import JobRow, core

MAX_ATTEMPTS = 25
Practices = frozenset[int] | None

_JOBS = core(JobRow)


def _insert_unless_deduped(dialect: Any) -> Any:
    """INSERT ... ON CONFLICT (dedupe_key) DO NOTHING, built once per dialect: the send
    path runs it for every message (NT2, NT3), mostly as a no-op."""
    return dialect.insert(_JOBS).on_conflict_do_nothing(index_elements=["dedupe_key"])


_DEDUPED_INSERT = {"postgresql": _insert_unless_deduped(postgresql)}
_DEDUPED_INSERT["sqlite"] = _insert_unless_deduped(sqlite)


class KnownKeys:
    """Dedupe keys of jobs this process saw committed, the newest `limit` of them.

    Every message enqueues its recipients' notification jobs with a key per unread
    streak, so after a streak's first message the insert is a no-op: a key known here
    is left out without asking the database. Only committed keys are added (the unit
    of work calls `add_all` after its commit), so a key here names a row that exists
    or existed; if it was pruned since, its streak had its notification already."""

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._keys: dict[str, None] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add_all(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._keys[key] = None
            while len(self._keys) > self.limit:
                del self._keys[next(iter(self._keys))]


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: str
    payload: dict[str, Any]
    dedupe_key: str


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    practice_id: PracticeId
    kind: str
    payload: dict[str, Any]
    attempts: int  # including this one
    max_attempts: int
    created_at: datetime
    run_after: datetime


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        practice_id=PracticeId(row.practice_id),
        kind=row.kind,
        payload=json.loads(row.payload),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        created_at=aware(row.created_at),
        run_after=aware(row.run_after),
    )


class JobQueue:
    """Adds jobs in the caller's transaction: they exist if and only if the change that
    caused them commits."""

    def __init__(self, conn: Connection, known: KnownKeys | None = None) -> None:
        self.conn = conn
        self.added = 0
        self.known = known
        self.new_keys: list[str] = []  # by `enqueue_deduped`, for `known` after commit

    def committed(self) -> None:
        """The unit of work committed: the keys added are known from now on."""
        if self.known is not None and self.new_keys:
            self.known.add_all(self.new_keys)
        self.new_keys = []

    def enqueue(
        self,
        practice_id: PracticeId | int,
        kind: str,
        payload: dict[str, Any],
        *,
        run_after: datetime | None = None,
        dedupe_key: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> bool:
        """Add a job; False when `dedupe_key` names a job that already exists (the
        job is then not added: enqueueing with a key is idempotent). `payload` holds
        ids only: it may be logged."""
        now = utcnow()
        values = dict(
            practice_id=practice_id,
            kind=kind,
            payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
            dedupe_key=dedupe_key,
            run_after=run_after or now,
            attempts=0,
            max_attempts=max_attempts,
            created_at=now,
        )
        if dedupe_key is None:
            self.conn.execute(insert(JobRow).values(**values))
        else:
            dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
            # RETURNING, not rowcount: psycopg reports -1 for this statement.
            stmt = (
                dialect.insert(JobRow)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(JobRow.id)
            )
            if self.conn.execute(stmt).first() is None:
                return False
        self.added += 1
        return True

    def enqueue_deduped(self, practice_id: PracticeId | int, jobs: list[NewJob]) -> None:
        """Add several jobs with dedupe keys in one statement; those whose key exists
        already are left out (as `enqueue` does). Wakes the runners after commit even
        when every key existed: the answer is not worth a RETURNING per row."""
        if self.known is not None:
            jobs = [job for job in jobs if job.dedupe_key not in self.known]
        if not jobs:
            return
        now = utcnow()
        self.conn.execute(
            _DEDUPED_INSERT[self.conn.dialect.name],
            [
                {
                    "practice_id": practice_id,
                    "kind": job.kind,
                    "payload": json.dumps(job.payload, sort_keys=True, separators=(",", ":")),
                    "dedupe_key": job.dedupe_key,
                    "run_after": now,
                    "attempts": 0,
                    "max_attempts": MAX_ATTEMPTS,
                    "created_at": now,
                }
                for job in jobs
            ],
        )
        self.added += len(jobs)
        self.new_keys.extend(job.dedupe_key for job in jobs)


class JobBoard:
    """The runner's view of the queue, across practices (a worker serves them all);
    nothing read here leaves the process except through a handler, which loads what it
    needs with the practice id of the job."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _due(self, now: datetime, kinds: list[str], practices: Practices) -> Any:
        return and_(
            JobRow.done_at.is_(None),
            JobRow.failed_at.is_(None),
            JobRow.run_after <= now,
            or_(JobRow.locked_until.is_(None), JobRow.locked_until < now),
            *self._scope(kinds, practices),
        )

    @staticmethod
    def _scope(kinds: list[str], practices: Practices) -> list[Any]:
        scope = [JobRow.kind.in_(kinds)]
        if practices is not None:  # a worker for some practices only
            scope.append(JobRow.practice_id.in_(sorted(practices)))
        return scope

    def has_due(self, kinds: list[str], practices: Practices = None) -> bool:
        """A cheap read before a claim's write transaction."""
        row = self.conn.execute(
            select(JobRow.id).where(self._due(utcnow(), kinds, practices)).limit(1)
        ).first()
        return row is not None

    def next_due_at(self, kinds: list[str], practices: Practices = None) -> datetime | None:
        """When the earliest waiting job (delayed, or leased by a worker) may run."""
        value = self.conn.execute(
            select(func.min(func.coalesce(JobRow.locked_until, JobRow.run_after))).where(
                JobRow.done_at.is_(None),
                JobRow.failed_at.is_(None),
                *self._scope(kinds, practices),
            )
        ).scalar()
        return None if value is None else aware(value)

    def claim(
        self,
        worker: str,
        kinds: list[str],
        *,
        limit: int,
        lease: timedelta,
        practices: Practices = None,
    ) -> list[Job]:
        """Take up to `limit` due jobs for `worker` until now + lease. The caller runs
        this in a write transaction and commits it before running the jobs."""
        now = utcnow()
        stmt = (
            select(JobRow.id)
            .where(self._due(now, kinds, practices))
            .order_by(JobRow.run_after, JobRow.id)
            .limit(limit)
        )
        if self.conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        ids = list(self.conn.execute(stmt).scalars())
        if not ids:
            return []
        self.conn.execute(
            update(JobRow)
            .where(JobRow.id.in_(ids))
            .values(locked_until=now + lease, locked_by=worker, attempts=JobRow.attempts + 1)
        )
        rows = self.conn.execute(
            select(JobRow.__table__).where(JobRow.id.in_(ids)).order_by(JobRow.run_after)
        )
        return [_job(r) for r in rows]

    def _held(self, job_id: int, worker: str) -> Any:
        return and_(JobRow.id == job_id, JobRow.locked_by == worker, JobRow.done_at.is_(None))

    def finish(self, job_id: int, worker: str) -> bool:
        """Mark done, if the worker still holds the job."""
        result = self.conn.execute(
            update(JobRow)
            .where(self._held(job_id, worker))
            .values(done_at=utcnow(), locked_until=None, last_error=None)
        )
        return bool(result.rowcount)

    def retry(self, job_id: int, worker: str, *, at: datetime, error: str) -> bool:
        result = self.conn.execute(
            update(JobRow)
            .where(self._held(job_id, worker))
            .values(run_after=at, locked_until=None, locked_by=None, last_error=error[:100])
        )
        return bool(result.rowcount)

    def defer(self, job_id: int, worker: str, *, at: datetime) -> bool:
        """Not an attempt: the handler said "not yet" (a delayed notification)."""
        result = self.conn.execute(
            update(JobRow)
            .where(self._held(job_id, worker))
            .values(run_after=at, locked_until=None, locked_by=None, attempts=JobRow.attempts - 1)
        )
        return bool(result.rowcount)

    def fail(self, job_id: int, worker: str, *, error: str) -> bool:
        """Give up on a job (out of attempts); it stays in the table for operators."""
        result = self.conn.execute(
            update(JobRow)
            .where(self._held(job_id, worker))
            .values(failed_at=utcnow(), locked_until=None, last_error=error[:100])
        )
        return bool(result.rowcount)

    def prune(self, before: datetime) -> int:
        """Forget jobs done before `before` (failed ones stay for operators)."""
        result = self.conn.execute(
            delete(JobRow).where(JobRow.done_at.is_not(None), JobRow.done_at < before)
        )
        return result.rowcount

    def counts(self) -> dict[str, int]:
        """Queue depth for operators and tests: pending, done, failed."""
        pending = self.conn.execute(
            select(func.count()).where(JobRow.done_at.is_(None), JobRow.failed_at.is_(None))
        ).scalar_one()
        done = self.conn.execute(
            select(func.count()).where(JobRow.done_at.is_not(None))
        ).scalar_one()
        failed = self.conn.execute(
            select(func.count()).where(JobRow.failed_at.is_not(None))
        ).scalar_one()
        return {"pending": int(pending), "done": int(done), "failed": int(failed)}
