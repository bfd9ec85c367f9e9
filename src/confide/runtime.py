"""Composition root: settings → database, key ring, password hasher.

Built once per process by `confide serve` / the CLI, and once per test app.
"""

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta

from confide.auth.passwords import Passwords
from confide.config import Settings
from confide.services.sessions import SessionPolicy
from confide.store import migrate
from confide.store.crypto import KeyRing, decode_master_key, load_or_create_key_file
from confide.store.db import Database, make_engine
from confide.store.group import GroupCommitter
from confide.store.uow import UnitOfWork, unit_of_work


@dataclass
class Runtime:
    settings: Settings
    db: Database
    passwords: Passwords
    session_policy: SessionPolicy
    # The send path's writer (store/group.py): one thread, one transaction per group.
    group: GroupCommitter = field(init=False)

    def __post_init__(self) -> None:
        self.group = GroupCommitter(self.db, max_pending=self.settings.max_pending_writes)

    def write(self) -> AbstractContextManager[UnitOfWork]:
        """A write transaction. Open it inside the route's own thread, never in a
        dependency: SQLite's writer lock must be released by the thread that took it,
        before the response goes out."""
        return unit_of_work(self.db, write=True)

    def read(self) -> AbstractContextManager[UnitOfWork]:
        return unit_of_work(self.db, write=False)

    def close(self) -> None:
        self.group.close()
        self.db.dispose()


def master_key(settings: Settings) -> bytes:
    if settings.master_key is not None:
        return decode_master_key(settings.master_key.get_secret_value())
    return load_or_create_key_file(settings.master_key_file)


def build_runtime(settings: Settings, *, run_migrations: bool = True) -> Runtime:
    if not settings.is_server_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(
        settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms
    )
    if run_migrations:
        migrate.upgrade(engine)
    return Runtime(
        settings=settings,
        db=Database(engine, KeyRing(master_key(settings))),
        passwords=Passwords(fast=settings.fast_password_hashing),
        session_policy=SessionPolicy(
            idle=timedelta(minutes=settings.session_idle_minutes),
            absolute=timedelta(hours=settings.session_absolute_hours),
            max_failures_account=settings.signin_max_failures_account,
            max_failures_ip=settings.signin_max_failures_ip,
            failure_window=timedelta(minutes=settings.signin_window_minutes),
        ),
    )
