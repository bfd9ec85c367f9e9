"""Group commit: one writer thread runs write commands in groups, one transaction each.

The hot write of Confide is "send a message": a few inserts, an audit row, an outbox row
and a commit. Run one transaction per request and most of the time goes to what every
transaction pays once (BEGIN, the audit chain head, COMMIT) and to threads taking turns
at the single SQLite writer. Here the requests queue their command instead, and one thread
runs whatever has queued, up to `max_group` commands, in ONE transaction: each command
in a savepoint of its own (`UnitOfWork.command`), so a refused or failing command undoes
only its own work; one audit-chain update and one commit for the group. Nobody's answer
goes out before the group is committed, so an acknowledged message is a durable one.

If the group's commit itself fails (the disk, a serialization failure on PostgreSQL), each
of its commands runs again alone, in a transaction of its own: a command is the whole
request (authentication included), so running it again is safe, and one bad command
cannot fail the others.
"""

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confide.domain.errors import Overloaded
from confide.store.db import Database
from confide.store.uow import UnitOfWork, unit_of_work

log = logging.getLogger("confide.store")

T = TypeVar("T")

MAX_GROUP = 64
MAX_PENDING = 256  # settings.max_pending_writes; docs/operations.md, "Overload"


@dataclass
class _Command:
    fn: Callable[[UnitOfWork], Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class GroupCommitter:
    def __init__(
        self, db: Database, *, max_group: int = MAX_GROUP, max_pending: int = MAX_PENDING
    ) -> None:
        self.db = db
        self.max_group = max_group
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue[_Command | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.groups = 0  # for the benchmarks: commands / groups = the mean group size
        self.commands = 0

    def submit(self, fn: Callable[[UnitOfWork], T]) -> "concurrent.futures.Future[T]":
        """Queue `fn(uow)`; its future holds what it returned or raised, once the group
        it ran in is committed (or, for what it raised, rolled back).

        T39: with `max_pending` commands already waiting, raises `Overloaded` (503 with
        Retry-After) at once and queues nothing: a flood costs no database work, and
        what is queued is answered within about a second."""
        if self._queue.qsize() >= self.max_pending:
            raise Overloaded()
        self._ensure_thread()
        command = _Command(fn)
        self._queue.put(command)
        return command.future

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=10)

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="confide-group-commit", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            group = [c for c in group if c.future.set_running_or_notify_cancel()]
            if group:
                self._run_group(group)

    def _run_group(self, group: list[_Command]) -> None:
        outcomes: list[tuple[_Command, bool, Any]] = []
        try:
            with unit_of_work(self.db, write=True) as uow:
                for command in group:
                    outcomes.append(self._attempt(uow, command))
                uow.commit()
        except Exception as exc:
            log.warning(
                "group commit of %d commands failed (%s); running them one by one",
                len(group),
                type(exc).__name__,
            )
            outcomes = [self._alone(command) for command in group]
        self.groups += 1
        self.commands += len(group)
        for command, ok, value in outcomes:
            if ok:
                command.future.set_result(value)
            else:
                command.future.set_exception(value)

    @staticmethod
    def _attempt(uow: UnitOfWork, command: _Command) -> tuple[_Command, bool, Any]:
        try:
            with uow.command():
                return command, True, command.fn(uow)
        except Exception as exc:
            return command, False, exc

    def _alone(self, command: _Command) -> tuple[_Command, bool, Any]:
        try:
            with unit_of_work(self.db, write=True) as uow:
                outcome = self._attempt(uow, command)
                uow.commit()
            return outcome
        except Exception as exc:
            return command, False, exc
