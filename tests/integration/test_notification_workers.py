"""NT2/NT3 exactly once with real `confide worker` processes: two workers sharing the
queue, and a worker killed (SIGKILL) in the middle of sending. Its claimed jobs come
back when their lease runs out and are finished by the others; the SMTP server
(aiosmtpd on 127.0.0.1, slowed down so the kill lands mid-send) receives every expected
email. A streak's email keeps one Message-ID across resends, so the only duplicate a
kill can cause (the server took the email, the worker died before recording it) is
visible as a repeated Message-ID, at most one per job in flight at the kill."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from confide.services import messaging, reading
from confide.store.uow import unit_of_work
from tests.conftest import TEST_MASTER_KEY
from tests.mailsink import SmtpSink
from tests.personas import World, start

CONFIDE = str(Path(sys.executable).parent / "confide")
LEASE_SECONDS = 3
CONCURRENCY = 4


@pytest.fixture
def sink():
    s = SmtpSink(delay=0.05)
    s.start()
    yield s
    s.stop()


def worker(world: World, sink: SmtpSink) -> subprocess.Popen[bytes]:
    settings = world.runtime.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env.update(
        CONFIDE_DATA_DIR=str(settings.data_dir),
        CONFIDE_DATABASE_URL=settings.database_url,
        CONFIDE_MASTER_KEY=TEST_MASTER_KEY,
        CONFIDE_SMTP_URL=sink.url,
        CONFIDE_PUBLIC_ORIGIN=settings.public_origin,
        CONFIDE_JOB_LEASE_SECONDS=str(LEASE_SECONDS),
        CONFIDE_JOB_CONCURRENCY=str(CONCURRENCY),
        CONFIDE_UNREAD_EMAIL_MINUTES="0.05",  # NT3 after 3 seconds
    )
    args = [CONFIDE, "worker"]
    for p in (world.practice_a, world.practice_b):
        args += ["--practice", str(p)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_nt2_nt3_exactly_once_with_two_workers_and_one_killed_mid_send(
    world: World, sink: SmtpSink
):
    db = world.runtime.db
    alex_address = None
    with unit_of_work(db, write=False) as uow:
        alex_address = uow.people.get_client(world.practice_a, world.id("alex")).email
    carl_address = world.emails["carl"]
    untouched, replied = [], []
    for i in range(150):
        conv = start(world, "carl", client="alex", text=f"message {i}").conversation.id
        if i % 3 == 0:
            untouched.append(conv)  # alex gets the NT2 email
        elif i % 3 == 1:
            with unit_of_work(db) as uow:  # read before any worker runs: no email
                reading.mark_read(uow, world.actor("alex"), conv, seq=1)
        else:
            with unit_of_work(db) as uow:  # alex answers: carl gets the NT3 email
                messaging.send_message(
                    uow,
                    world.actor("alex"),
                    messaging.SendMessage(conv, "reply", uuid.uuid4().hex),
                )
            replied.append(conv)
    expected = len(untouched) + len(replied)
    procs = [worker(world, sink)]
    try:
        end = time.monotonic() + 60
        while len(sink.received) < 8 and time.monotonic() < end:
            time.sleep(0.01)
        assert len(sink.received) >= 8, procs[0].stdout.read() if procs[0].stdout else ""
        procs[0].send_signal(signal.SIGKILL)  # mid-send: it holds up to 4 jobs
        procs[0].wait()
        procs += [worker(world, sink), worker(world, sink)]
        end = time.monotonic() + 90
        while time.monotonic() < end:
            ids = {r.message_id for r in sink.received}
            if len(ids) >= expected:
                break
            time.sleep(0.2)
        time.sleep(LEASE_SECONDS + 1)  # anything late would show up now
    finally:
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        for p in procs[1:]:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    to_alex = [r for r in sink.received if alex_address in r.rcpt_tos]
    to_carl = [r for r in sink.received if carl_address in r.rcpt_tos]
    ids = [r.message_id for r in to_alex + to_carl]
    # Every expected email arrived: one per unread streak ...
    assert len({r.message_id for r in to_alex}) == len(untouched)
    assert len({r.message_id for r in to_carl}) == len(replied)
    # ... and nothing was sent twice but what the kill interrupted between the SMTP
    # server's answer and the worker's record of it (the same Message-ID).
    assert len(ids) - len(set(ids)) <= CONCURRENCY
    with unit_of_work(db, write=False) as uow:  # this world's jobs (others share the db)
        failed = uow.conn.execute(
            text(
                "SELECT count(*) FROM jobs WHERE failed_at IS NOT NULL AND practice_id IN (:a, :b)"
            ),
            {"a": world.practice_a, "b": world.practice_b},
        ).scalar_one()
    assert failed == 0
