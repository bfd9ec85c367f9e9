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

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

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
    # Set by `run` (an awaiting request): the answer goes straight to this asyncio future,
    # settled with the rest of its group in one call into the event loop.
    loop: asyncio.AbstractEventLoop | None = None
    waiter: "asyncio.Future[Any] | None" = None

    def wanted(self) -> bool:
        """Not given up on by its caller (a request whose client went away)."""
        if self.waiter is not None:
            return not self.waiter.done()  # read from the writer's thread: a hint only
        return self.future.set_running_or_notify_cancel()


def _connection_lost(exc: BaseException) -> bool:
    """The connection, and with it the transaction, is gone: using it again would only
    raise PendingRollbackError, hiding the real error."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _settle(outcomes: "list[tuple[asyncio.Future[Any], bool, Any]]") -> None:
    """In the event loop: the answers of one group's awaiting requests."""
    for waiter, ok, value in outcomes:
        if waiter.done():  # cancelled meanwhile
            continue
        if ok:
            waiter.set_result(value)
        else:
            waiter.set_exception(value)


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
        return self._queue_command(_Command(fn)).future

    async def run(self, fn: Callable[[UnitOfWork], T]) -> T:
        """`submit` for a coroutine: await the command's result. The answers of a
        group's commands from one event loop are handed to it in one call (one wake-up
        of the loop per group, not one per command). Raises `Overloaded` as `submit`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._queue_command(_Command(fn, loop=loop, waiter=waiter))
        return await waiter

    def _queue_command(self, command: _Command) -> _Command:
        if self._queue.qsize() >= self.max_pending:
            raise Overloaded()
        self._ensure_thread()
        self._queue.put(command)
        return command

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
            group = [c for c in group if c.wanted()]
            if group:
                self._run_group(group)

    def _run_group(self, group: list[_Command]) -> None:
        outcomes: list[tuple[_Command, bool, Any]] = []
        try:
            with unit_of_work(self.db, write=True) as uow:
                for command in group:
                    outcome = self._attempt(uow, command)
                    if not outcome[1] and _connection_lost(outcome[2]):
                        # The group's transaction went with the connection (a restart,
                        # an ended backend): each command runs again alone.
                        raise outcome[2]
                    outcomes.append(outcome)
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
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for command, ok, value in outcomes:
            if command.loop is not None and command.waiter is not None:
                by_loop.setdefault(command.loop, []).append((command.waiter, ok, value))
            elif ok:
                command.future.set_result(value)
            else:
                command.future.set_exception(value)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits
                loop.call_soon_threadsafe(_settle, settled)

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
                if not outcome[1] and _connection_lost(outcome[2]):
                    return outcome  # its error (503), not the dead connection's next one
                uow.commit()
            return outcome
        except Exception as exc:
            return command, False, exc
