"""T35 (issue 8): nothing acknowledged is lost when the server is killed.

A real `confide serve` on seeded data takes sends at about 200 a second over 100
conversations, each with its own idempotency key (MS5), while it is killed with SIGKILL
at random moments and started again on the same data and port; the senders send every
unacknowledged message again with the same key until it is acknowledged. On PostgreSQL
the server's database connections are also terminated (`pg_terminate_backend`) at
random moments: sends in flight must get a clean 503 (never a 500), and the pool must
reconnect. Then, from the database itself:

- every acknowledged message is stored, with the id, seq and text it was acknowledged
  with (0 lost), and nothing is stored that was never sent;
- no idempotency key and no text is stored twice (0 duplicates);
- each conversation's seq numbers are 1..N, without a gap, and `last_seq` is N;
- each message has exactly one `message.sent` audit row, and `confide audit verify`
  finds the hash chains intact.

The short variant (the normal suite) sends for 6 s with 1 kill; the long one
(`CONFIDE_CRASH_TEST=long`, see README) sends for 60 s with 5 kills.
`CONFIDE_CRASH_SECONDS`, `CONFIDE_CRASH_KILLS` and `CONFIDE_CRASH_RATE` override either.
"""

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confide.runtime import build_runtime
from tests.conftest import TEST_MASTER_KEY, make_settings
from tests.crash_harness import (
    LoadGenerator,
    OwnDatabase,
    Server,
    audit_problems,
    backend_killer,
    check_database,
    free_port,
    seed_practice,
    server_killer,
)
from tests.crash_harness import own_database as harness_own_database

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"
LONG = os.environ.get("CONFIDE_CRASH_TEST", "short") == "long"
SECONDS = float(os.environ.get("CONFIDE_CRASH_SECONDS", 60 if LONG else 6))
KILLS = int(os.environ.get("CONFIDE_CRASH_KILLS", 5 if LONG else 1))
RATE = float(os.environ.get("CONFIDE_CRASH_RATE", 200))
CONVERSATIONS = 100


@pytest.fixture
def own_database() -> Iterator[OwnDatabase]:
    """Terminating "every backend of this database" must not touch another test's
    connections: a database of the test's own on PostgreSQL."""
    with harness_own_database("confide_crash") as db:
        yield db


def kill_times(seconds: float, kills: int) -> list[float]:
    """`kills` random moments in the sending window, away from its ends, one in each
    of `kills` equal slots (a kill also waits for the restarted server to take load)."""
    lo, hi = 1.5, max(2.5, seconds - 3.0)
    slot = (hi - lo) / kills
    return [lo + i * slot + random.uniform(0, slot * 0.6) for i in range(kills)]


def seeded_server(tmp_path: Path, database_url: str, conversations: int):
    """A practice seeded in process, then `confide serve` on its data (not yet started)."""
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir, database_url=database_url)
    runtime = build_runtime(settings)
    try:
        seeded = seed_practice(runtime, conversations=conversations)
    finally:
        runtime.close()
    env = {"CONFIDE_MASTER_KEY": TEST_MASTER_KEY, "CONFIDE_LOG_LEVEL": "warning"}
    if database_url:
        env["CONFIDE_DATABASE_URL"] = database_url
    port = free_port()
    env["CONFIDE_PUBLIC_ORIGIN"] = f"http://127.0.0.1:{port}"
    return settings, seeded, Server(port, data_dir, env, tmp_path / "serve.log")


def test_t35_acknowledged_sends_survive_sigkill(tmp_path: Path, own_database: OwnDatabase):
    database_url = own_database.url
    settings, seeded, server = seeded_server(tmp_path, database_url, CONVERSATIONS)
    server.start()

    background = []
    if database_url:
        background.append(backend_killer(own_database.terminate_backends, every=(0.5, 2.0)))
    # Offered 200/s is more than this server takes on a loaded 2-core machine (tens a
    # second, docs/benchmarks.md): what queued while it was down drains afterwards.
    drain = float(os.environ.get("CONFIDE_CRASH_DRAIN_SECONDS", 900 if LONG else 240))
    gen = LoadGenerator(server, seeded.lanes, rate=RATE, seconds=SECONDS, drain_seconds=drain)
    try:
        figures = asyncio.run(
            gen.run(server_killer(kill_times(SECONDS, KILLS)), background=tuple(background))
        )
    finally:
        server.stop()
    starts = ", ".join(f"{t:.1f}" for t in server.start_seconds)
    print(f"\nT35 {'PostgreSQL' if database_url else 'SQLite'}: {figures.summary()}")
    print(f"T35 server starts (s): {starts}")
    log = server.log_tail(20_000)

    assert figures.server_kills == KILLS
    if database_url:
        assert figures.backend_kills > 0
    assert not figures.unexpected, f"{figures.unexpected[:10]}\n{log}"
    assert figures.statuses.keys() <= {200, 201, 429, 503}, figures.statuses
    missing = gen.unacknowledged()
    assert not missing, f"{len(missing)} sends unacknowledged after {drain:.0f} s of drain\n{log}"
    assert figures.acknowledged == figures.offered == int(RATE * SECONDS)

    runtime = build_runtime(settings, run_migrations=False)
    try:
        found = check_database(runtime, seeded, gen.sends)
        audit = audit_problems(runtime)  # what `confide audit verify` checks
    finally:
        runtime.close()
    print(
        f"T35 stored {found.stored}, lost {len(found.lost)}, duplicate keys "
        f"{len(found.duplicate_keys)}, duplicate texts {len(found.duplicate_texts)}, "
        f"gaps {len(found.gaps)}, audit problems {len(found.audit)}"
    )
    assert not found.lost, found.lost[:10]
    assert not found.duplicate_keys, found.duplicate_keys[:10]
    assert not found.duplicate_texts, found.duplicate_texts[:10]
    assert not found.phantoms, found.phantoms[:10]
    assert not found.gaps, found.gaps[:10]
    assert not found.audit, found.audit[:10]
    assert found.stored == figures.acknowledged
    assert not audit, audit[:10]


@pytest.mark.skipif(not ON_POSTGRES, reason="stops the PostgreSQL database; see T35 for SQLite")
def test_t39_database_unavailable_sends_get_503_and_are_not_acknowledged(
    tmp_path: Path, own_database: OwnDatabase
):
    """T39 (database unavailable), tied to T35: while the server cannot reach its
    database, a send gets 503 with Retry-After (never a 500, never an acknowledgement);
    when the database is back, the pool reconnects and the same keys are stored once."""
    _settings, seeded, server = seeded_server(tmp_path, own_database.url, 2)
    server.start()
    lane = seeded.lanes[0]
    url = f"{server.base}/api/v1/conversations/{lane.conversation_id}/messages"
    auth = {"Authorization": f"Bearer {lane.token}"}

    def send(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(url, json={"text": f"outage {i}", "idempotency_key": f"o-{i}"})

    try:
        with httpx.Client(headers=auth, timeout=30) as client:
            assert send(client, 0).status_code == 201
            own_database.allow_connections(False)
            assert own_database.terminate_backends() > 0  # and no new connection is let in
            during = [send(client, i) for i in range(1, 6)]
            own_database.allow_connections(True)
            after = [send(client, i) for i in range(1, 6)]
    finally:
        own_database.allow_connections(True)
        server.stop()
    log = server.log_tail()
    for r in during:
        assert r.status_code == 503, f"{r.status_code} {r.text}\n{log}"
        assert r.json()["error"]["code"] == "database_unavailable"
        assert int(r.headers["retry-after"]) >= 1
    assert [r.status_code for r in after] == [201] * 5  # stored now, not before
    assert [r.json()["message"]["seq"] for r in after] == [3, 4, 5, 6, 7]
