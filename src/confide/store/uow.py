"""The unit of work: one connection, one transaction, the repos, audit and outbox.

    with db_uow(db) as uow:
        ...                       # repos read and write through uow.conn
        uow.audit.record(...)     # RC1: in the same transaction
        uow.outbox.add(...)       # after-commit work, in the same transaction
        uow.commit()

Leaving the block without `commit()` rolls everything back, audit rows included.
Callbacks registered with `on_commit` run only after a successful commit; a commit that
added outbox rows also wakes the outbox listeners of its database: nothing leaves the
process before commit. Where the realtime relay is registered (`relay_at_commit`, by
`serve`), a transaction that added outbox rows moves them into the event log itself,
just before it commits, and announces the new position after (docs/realtime.md).
"""

import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection

from confide.store.db import Database
from confide.store.hot import run_plain
from confide.store.repos.announcements import AnnouncementRepo
from confide.store.repos.audit import AuditLogRepo, AuditWriter
from confide.store.repos.conversations import ConversationRepo
from confide.store.repos.events import EventLog, EventRepo
from confide.store.repos.exports import ExportQueue, ExportRepo
from confide.store.repos.jobs import JobBoard, JobQueue, KnownKeys
from confide.store.repos.links import LinkRepo
from confide.store.repos.notifications import NotificationRepo
from confide.store.repos.oidc import OidcRepo  # issue 5: OIDC sign-in
from confide.store.repos.outbox import OutboxWriter
from confide.store.repos.people import PeopleRepo
from confide.store.repos.practices import PracticeRepo
from confide.store.repos.push import PushRepo  # NT4: Web Push
from confide.store.repos.records import RecordsRepo
from confide.store.repos.sessions import SessionRepo
from confide.store.repos.signin import SigninRepo  # issue 5: second factor, lockout

_outbox_listeners: "weakref.WeakKeyDictionary[Database, tuple[Callable[[], None], ...]]" = (
    weakref.WeakKeyDictionary()
)


def listen_for_outbox(db: Database, fn: Callable[[], None]) -> Callable[[], None]:
    """Call `fn` after every commit on `db` that added outbox rows; returns the function
    that stops it. `fn` runs in the committing thread, so it must be quick and
    thread-safe (the relay's wake-up is `loop.call_soon_threadsafe`)."""
    _outbox_listeners[db] = (*_outbox_listeners.get(db, ()), fn)

    def stop() -> None:
        _outbox_listeners[db] = tuple(f for f in _outbox_listeners.get(db, ()) if f is not fn)

    return stop


@dataclass(frozen=True)
class _CommitRelay:
    kinds: frozenset[str]
    limit: int
    announce: Callable[[int], None]


_commit_relays: "weakref.WeakKeyDictionary[Database, tuple[_CommitRelay, ...]]" = (
    weakref.WeakKeyDictionary()
)


def relay_at_commit(
    db: Database, kinds: Collection[str], announce: Callable[[int], None], *, limit: int
) -> Callable[[], None]:
    """From now on, a transaction on `db` that added outbox rows moves the pending rows
    of `kinds` (its own and any left over, up to `limit`) into the event log just before
    it commits, under the relay's lock (store/repos/events.py), and calls
    `announce(position)` after the commit, in the committing thread (so it must be quick
    and thread-safe). Saves the relay a transaction (and, on SQLite, a wait for the
    writer's lock and a sync to disk) for every commit. Returns the function that stops
    it; rows it does not move (another process, a delayed row, past `limit`) are left
    for the relay's poll. Several registrations (several apps on one database, as in
    the tests) share one move and each hears the position."""
    relay = _CommitRelay(frozenset(kinds), limit, announce)
    _commit_relays[db] = (*_commit_relays.get(db, ()), relay)

    def stop() -> None:
        _commit_relays[db] = tuple(r for r in _commit_relays.get(db, ()) if r is not relay)

    return stop


def _relay_in_transaction(uow: "UnitOfWork") -> list[Callable[[], None]]:
    """The commit's share of `relay_at_commit`: move the rows now, announce after."""
    relays = _commit_relays.get(uow.db, ()) if uow.outbox.added else ()
    if not relays:
        return []
    kinds = frozenset().union(*(r.kinds for r in relays))
    position = uow.event_log.relay_outbox(kinds, limit=max(r.limit for r in relays))
    if position is None:
        return []
    return [partial(r.announce, position) for r in relays]


_job_listeners: "weakref.WeakKeyDictionary[Database, tuple[Callable[[], None], ...]]" = (
    weakref.WeakKeyDictionary()
)


def listen_for_jobs(db: Database, fn: Callable[[], None]) -> Callable[[], None]:
    """Like `listen_for_outbox`, for commits that added jobs (jobs/runner.py)."""
    _job_listeners[db] = (*_job_listeners.get(db, ()), fn)

    def stop() -> None:
        _job_listeners[db] = tuple(f for f in _job_listeners.get(db, ()) if f is not fn)

    return stop


_known_job_keys: "weakref.WeakKeyDictionary[Database, KnownKeys]" = weakref.WeakKeyDictionary()


def _job_keys(db: Database) -> KnownKeys:
    known = _known_job_keys.get(db)
    if known is None:
        known = _known_job_keys.setdefault(db, KnownKeys())
    return known


# A group command's savepoint (store/group.py), as plain SQL with one fixed name:
# commands of a group run one after another, never nested. `Connection.begin_nested`
# names each savepoint anew (sa_savepoint_1, _2, ...), so SQLAlchemy compiled the
# SAVEPOINT and RELEASE of every send afresh: 145 µs a send; through
# `exec_driver_sql` 23 µs, on the driver's cursor (store/hot.py) 2-4 µs (measured on
# SQLite, docs/operations.md). Errors come wrapped as SQLAlchemy's.
_SAVEPOINT = "SAVEPOINT confide_command"
_RELEASE = "RELEASE SAVEPOINT confide_command"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT confide_command"


class UnitOfWork:
    def __init__(self, db: Database, conn: Connection) -> None:
        self.db = db
        self.conn = conn
        self.practices = PracticeRepo(conn)
        self.people = PeopleRepo(conn)
        self.conversations = ConversationRepo(conn, db.keys)
        self.records = RecordsRepo(conn, db.keys)
        self.sessions = SessionRepo(conn)
        self.signin = SigninRepo(conn, db.keys)  # issue 5: second factor, lockout
        self.oidc = OidcRepo(conn)  # issue 5: OIDC sign-in
        self.push = PushRepo(conn)  # NT4: Web Push
        self.audit = AuditWriter(conn, db.keys)
        self.audit_log = AuditLogRepo(conn)  # reads one practice's chain (issue 7)
        self.outbox = OutboxWriter(conn)
        self.events = EventRepo(conn)
        self.event_log = EventLog(conn)  # across practices: the relay and the hubs only
        # Data exports (issue 7): the practice's export jobs, and the claimer's queue
        # across practices (jobs/exports.py only).
        self.exports = ExportRepo(conn, db.keys)
        self.export_queue = ExportQueue(conn)
        self.announcements = AnnouncementRepo(conn, db.keys)  # AN1 (issue 7)
        # Jobs, email links and notifications (branch `mail`).
        self.jobs = JobQueue(conn, _job_keys(db))
        self.job_board = JobBoard(conn)  # across practices: the job runner only
        self.links = LinkRepo(conn)
        self.notifications = NotificationRepo(conn)
        self._after_commit: list[Callable[[], None]] = []
        self.committed = False
        # Group commit (store/group.py): one command's share of a shared transaction.
        self._item = False  # a command's savepoint is open
        self._item_marks = (0, 0, 0, 0, 0)
        self._item_done = False  # the current command has committed: it is over

    def on_commit(self, fn: Callable[[], None]) -> None:
        self._after_commit.append(fn)

    def rollback(self) -> None:
        """Undo everything so far (audit rows and outbox rows included) and start over.
        Within a group commit: everything since the command's last `commit()`."""
        if self._item:
            self._undo_item()
            self._begin_item()
            return
        if self._item_done:
            raise _after_item()
        self.conn.rollback()
        self._forget_reads()
        self.audit.discard()
        self.outbox.discard()
        self.jobs.added = 0
        self.jobs.new_keys = []
        self._after_commit = []

    def commit(self) -> None:
        """Commit, then run the `on_commit` callbacks and wake the outbox listeners.
        Within a group commit, the command's work so far is kept (its savepoint is
        released) and becomes durable when the group commits."""
        if self._item:
            # A group command ends at its commit: its savepoint is released and no new
            # one is opened (that would cost a SAVEPOINT and a ROLLBACK TO for every
            # send). Anything after it in the same command is refused (`_after_item`).
            run_plain(self.conn, _RELEASE)
            self._item = False
            self._item_done = True
            return
        if self._item_done:
            raise _after_item()
        self.audit.flush()
        self.outbox.flush()
        # Last before the commit: on PostgreSQL the relay's lock is held until it.
        announcements = _relay_in_transaction(self)
        self.conn.commit()
        self.committed = True
        self.jobs.committed()
        callbacks, self._after_commit = [*announcements, *self._after_commit], []
        if self.outbox.added:
            self.outbox.added = 0
            callbacks.extend(_outbox_listeners.get(self.db, ()))
        if self.jobs.added:
            self.jobs.added = 0
            callbacks.extend(_job_listeners.get(self.db, ()))
        for fn in callbacks:
            fn()

    # -- group commit (store/group.py) ------------------------------------------------

    def _begin_item(self) -> None:
        run_plain(self.conn, _SAVEPOINT)
        self._item = True
        self._item_marks = (
            self.audit.pending,
            self.outbox.pending,
            self.jobs.added,
            len(self.jobs.new_keys),
            len(self._after_commit),
        )

    def _forget_reads(self) -> None:
        """Drop the repos' identity maps: what they hold may have been rolled back."""
        self.people.forget()
        self.conversations.forget()
        self.practices.forget()
        self.signin.forget()

    def _undo_item(self) -> None:
        if not self.conn.invalidated:  # a lost connection took the transaction with it
            run_plain(self.conn, _ROLLBACK_TO)
            run_plain(self.conn, _RELEASE)
        self._forget_reads()
        audit, outbox, jobs, job_keys, callbacks = self._item_marks
        self.audit.discard(keep=audit)
        self.outbox.discard(keep=outbox)
        self.jobs.added = jobs
        del self.jobs.new_keys[job_keys:]
        del self._after_commit[callbacks:]

    @contextmanager
    def command(self) -> Iterator[None]:
        """Run one command of a group inside this (shared) transaction, in a savepoint:
        its `commit()` keeps its work and ends it (a command commits once, last, as the
        services do; committing or rolling back again raises), its `rollback()` or an
        exception undoes only its own work, and what it leaves uncommitted is undone, as
        when a unit of work of its own is left without `commit()`."""
        self._item_done = False
        self._begin_item()
        try:
            yield
        finally:
            if self._item:
                self._item = False
                self._undo_item()
            self._item_done = False


def _after_item() -> RuntimeError:
    return RuntimeError("a group command ends at its commit; nothing may follow it")


@contextmanager
def unit_of_work(db: Database, *, write: bool = True) -> Iterator[UnitOfWork]:
    """`write=False` opens a read transaction that never blocks writers (SQLite WAL);
    recording audit rows needs `write=True`."""
    with db.connection(write=write) as conn:
        yield UnitOfWork(db, conn)
