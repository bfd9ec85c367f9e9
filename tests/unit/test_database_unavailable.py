"""T39 (database unavailable): which database errors are an outage (503, retry with the
same idempotency key) and which are a bug (500). The server side of it, for real, is in
tests/integration/test_crash_durability.py."""

from fastapi import FastAPI
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.testclient import TestClient

from confide.store.db import database_unavailable
from confide.web import errors


class _DriverError(Exception):
    pass


def test_t39_outages_are_unavailable():
    assert database_unavailable(OperationalError("SELECT 1", None, _DriverError("refused")))
    assert database_unavailable(InterfaceError("SELECT 1", None, _DriverError("closed")))
    assert database_unavailable(PoolTimeoutError("QueuePool limit reached"))
    invalidated = DBAPIError("SELECT 1", None, _DriverError("gone"), connection_invalidated=True)
    assert database_unavailable(invalidated)


def test_t39_bugs_are_not_unavailable():
    assert not database_unavailable(IntegrityError("INSERT", None, _DriverError("unique")))
    assert not database_unavailable(ProgrammingError("SELEC", None, _DriverError("syntax")))
    assert not database_unavailable(DBAPIError("SELECT 1", None, _DriverError("other")))
    assert not database_unavailable(ValueError("not a database error"))


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/api/outage")
    def outage() -> None:
        raise OperationalError("SELECT 1", None, _DriverError("terminating connection"))

    @app.get("/api/bug")
    def bug() -> None:
        raise IntegrityError("INSERT", None, _DriverError("unique"))

    return app


def test_t39_an_outage_is_a_503_with_retry_after_and_a_bug_stays_a_500():
    client = TestClient(_app(), raise_server_exceptions=False)
    r = client.get("/api/outage")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "database_unavailable"
    assert r.headers["retry-after"] == "1"
    r = client.get("/api/bug")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
