"""Shared fixtures: a real database (SQLite file, or PostgreSQL with
CONFIDE_TEST_DATABASE=postgres), the real app, and the seeded personas."""

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, text

from confide.config import Settings
from confide.runtime import Runtime, build_runtime
from confide.web.ws_protocol import uvicorn_ws_options
from tests import phi_watch
from tests.personas import World, build_world

TEST_MASTER_KEY = "q2o0k0JmW0n8P1pYqk8Y6bq5Vt8k8V3p0Z3y6n9m1aE="


def pytest_configure(config: pytest.Config) -> None:
    phi_watch.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """T26: a canary in any log line fails the run (tests/phi_watch.py)."""
    hits = phi_watch.WATCH.hits
    if hits:
        shown = "; ".join(f"{name}: {canary!r}" for name, canary in hits[:20])
        print(f"\nT26 FAILED: health information in {len(hits)} log line(s): {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _postgres_url() -> str:
    url = os.environ.get("CONFIDE_TEST_POSTGRES_URL", "")
    if not url:
        pytest.skip("CONFIDE_TEST_POSTGRES_URL is not set")
    return url


def _reset_postgres(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    database_url = ""
    if os.environ.get("CONFIDE_TEST_DATABASE") == "postgres":
        database_url = _postgres_url()
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "master_key": TEST_MASTER_KEY,
        "demo": True,  # allows the fast password hashing below; cookies stay Secure
        "fast_password_hashing": True,
        "secure_cookies": True,
        "public_origin": "https://testserver",
        # Every test request comes from one address: the per-address sign-in limit
        # would add up across the suite (tests of the limit set their own).
        "signin_max_failures_ip": 10_000,
        # The per-IP limit of emailed-link requests has its own test (test_email_links);
        # elsewhere every test client shares one address.
        "link_requests_per_ip": 1_000_000,
        # T11: tests send many messages quickly as one user; the send-rate tests
        # (tests/integration/test_send_rate.py) set the real limits.
        "send_rate_per_second": 100_000,
        "send_burst": 100_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    settings = make_settings(tmp_path_factory.mktemp("confide-data"))
    if settings.is_server_database:
        _reset_postgres(settings.database_url)
    rt = build_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def world(runtime: Runtime) -> World:
    """A fresh pair of practices per test (practices are isolated, so tests can share
    one database)."""
    return build_world(runtime)


@pytest.fixture(scope="module")
def shared_world(runtime: Runtime) -> World:
    """One world for read-mostly matrix tests of a module."""
    return build_world(runtime)


@contextlib.contextmanager
def serving(app: Any, **options: Any) -> Iterator[str]:
    """`app` on a real uvicorn server in a thread of this process, with the options
    `confide serve` uses (the lean WebSocket protocol) and any `options` over them;
    yields "127.0.0.1:PORT" once it accepts connections, stops it after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **(uvicorn_ws_options() | options),
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.01)
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10.0)
