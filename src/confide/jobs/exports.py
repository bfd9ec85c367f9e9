"""Data exports in the background (EX4): a small claimer of its own, until the general
durable job runner takes the work over (`run_export` is the whole job: claim → run).

- `claim_export` takes the oldest queued export, or one whose run stopped renewing its
  lease (a worker that died), in a short write transaction: `FOR UPDATE SKIP LOCKED` on
  PostgreSQL, so several processes never take the same one; SQLite's single writer
  lock on the embedded default.
- `run_export` writes the archive (services/exports.generate_archive) with progress
  every second, each progress write renewing the lease; success marks it ready, a
  failure puts it back in the queue (up to MAX_ATTEMPTS runs) with a reason code. A
  partial archive is never visible: it is written as `.part` and renamed at the end.
- `ExportRunner` runs in `confide serve` (started in the app's lifespan, like the
  outbox relay): one export at a time per process, polling every few seconds and woken
  when an export is requested; it also expires downloads after their 72 hours.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from anyio import to_thread

from confide.domain.exports import LEASE
from confide.domain.ids import PracticeId
from confide.jobs.background import BackgroundLoop
from confide.services import exports
from confide.store.clock import utcnow
from confide.store.crypto import CorruptCiphertext
from confide.store.db import Database
from confide.store.uow import unit_of_work

log = logging.getLogger("confide.jobs")

POLL_SECONDS = 2.0
SWEEP_EVERY_SECONDS = 300.0


def claim_export(db: Database, *, only: int | None = None) -> tuple[PracticeId, int] | None:
    with unit_of_work(db, write=True) as uow:
        claimed = uow.export_queue.claim_next(lease=LEASE, only=only)
        uow.commit()
    return claimed


def _reason(exc: BaseException) -> str:
    """A reason code for the export's `error` (never the exception's text: it might
    quote data)."""
    if isinstance(exc, CorruptCiphertext):
        return "key_unreadable"
    if isinstance(exc, OSError):
        return "storage_error"
    return "internal_error"


def run_export(
    db: Database,
    practice_id: PracticeId,
    export_id: int,
    *,
    export_dir: Path,
    stopping: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> str:
    """Run one claimed export to its end: "ready", "retry", "failed" or "cancelled".
    `stopping` set (the server shuts down): the run stops at its next progress report
    and the export goes back to the queue. `on_progress(percent)`: also told (the CLI's
    progress bar)."""
    with unit_of_work(db, write=False) as uow:
        export = uow.exports.get_export(practice_id, export_id)
        password = uow.exports.reveal_password(practice_id, export_id)
    path = exports.archive_path(export_dir, export)
    path.unlink(missing_ok=True)  # a crashed earlier run's leftovers, never served

    def progress(percent: int) -> bool:
        if stopping is not None and stopping.is_set():
            return False
        with unit_of_work(db, write=True) as uow:
            still_mine = uow.exports.mark_progress(
                practice_id, export_id, progress=percent, lease_until=utcnow() + LEASE
            )
            uow.commit()
        if on_progress is not None:
            on_progress(percent)
        return still_mine

    def read() -> contextlib.AbstractContextManager:  # type: ignore[type-arg]
        return unit_of_work(db, write=False)

    started = time.monotonic()
    try:
        generated = exports.generate_archive(
            read, export, password=password, path=path, on_progress=progress
        )
    except exports.ExportCancelled:
        if stopping is not None and stopping.is_set():
            with unit_of_work(db, write=True) as uow:
                uow.exports.mark_retry(practice_id, export_id, error="interrupted")
                uow.commit()
            return "retry"
        log.info("export %s stopped: deleted or taken over", export_id)
        return "cancelled"
    except Exception as exc:
        log.warning("export %s failed (%s)", export_id, type(exc).__name__)
        with unit_of_work(db, write=True) as uow:
            retry = exports.fail_export(uow, export, reason=_reason(exc), attempt=export.attempts)
        return "retry" if retry else "failed"
    with unit_of_work(db, write=True) as uow:
        if not uow.exports.mark_progress(
            practice_id, export_id, progress=99, lease_until=utcnow() + LEASE
        ):
            uow.rollback()
            path.unlink(missing_ok=True)
            return "cancelled"
        exports.finish_export(uow, export, generated, attempt=export.attempts)
    log.info(
        "export %s ready: %d messages, %d files, %d bytes in %.1f s",
        export_id,
        generated.messages,
        generated.files,
        generated.file_size,
        time.monotonic() - started,
    )
    return "ready"


def run_next_export(
    db: Database,
    *,
    export_dir: Path,
    stopping: threading.Event | None = None,
    only: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> str | None:
    """Claim and run one export (`only`: that one); None when none is waiting."""
    if stopping is not None and stopping.is_set():
        return None
    claimed = claim_export(db, only=only)
    if claimed is None:
        return None
    return run_export(
        db,
        claimed[0],
        claimed[1],
        export_dir=export_dir,
        stopping=stopping,
        on_progress=on_progress,
    )


def expire_exports(db: Database, *, export_dir: Path, batch: int = 100) -> int:
    """Remove the archives of every ready export past its 72 hours (EX3), `batch` at a
    time: a backlog (a server that was down) is cleared in one sweep, not 100 a sweep.
    Each expired export leaves the list, so the loop ends; a batch of nothing new (an
    export that could not be expired) ends it too."""
    done: set[tuple[PracticeId, int]] = set()
    while True:
        with unit_of_work(db, write=False) as uow:
            due = [e for e in uow.export_queue.list_expired(limit=batch) if e not in done]
        for practice_id, export_id in due:
            with unit_of_work(db, write=True) as uow:
                exports.expire_export(uow, practice_id, export_id, export_dir=export_dir)
            done.add((practice_id, export_id))
        if len(due) < batch:
            return len(done)


class ExportRunner(BackgroundLoop):
    """Builds requested exports one at a time and sweeps expired archives. On `stop()` a
    running export stops at its next progress report (within about a second) and goes
    back to the queue."""

    name = "export runner"

    def __init__(
        self, db: Database, export_dir: Path, *, poll_seconds: float = POLL_SECONDS
    ) -> None:
        super().__init__(poll_seconds=poll_seconds)
        self.db = db
        self.export_dir = export_dir
        self._next_sweep = time.monotonic()

    async def round(self) -> float | None:
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
            await to_thread.run_sync(lambda: expire_exports(self.db, export_dir=self.export_dir))
        while (
            await to_thread.run_sync(
                lambda: run_next_export(self.db, export_dir=self.export_dir, stopping=self.stopping)
            )
        ) is not None:
            pass
        return None
