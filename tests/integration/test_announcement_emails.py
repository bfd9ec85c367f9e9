"""AN1 + NT1: the email alert of an announcement, against a real SMTP server on
127.0.0.1 (aiosmtpd): one email per recipient who can open the portal, decided when the
job runs, never the announcement's text, its author or the client's name, the practice's
name only when the practice chose to be named, and once only."""

import json
import uuid

import pytest
from sqlalchemy import select

from confide.domain.announcements import Audience
from confide.domain.ids import ClientId
from confide.jobs.runner import JobRunner
from confide.services import announcements, clients, notifications
from confide.store.tables import AuditRow, JobRow
from confide.store.uow import unit_of_work
from tests.mailsink import SmtpSink, drain, make_runner
from tests.personas import World

SUBJECT = "You have a new message in your client portal"


@pytest.fixture
def sink():
    s = SmtpSink()
    s.start()
    yield s
    s.stop()


def runner_for(world: World, sink: SmtpSink) -> JobRunner:
    return make_runner(
        world.runtime, sink, practices=frozenset({world.practice_a, world.practice_b})
    )


def announce(world: World, who: str, audience: Audience, text: str) -> int:
    with unit_of_work(world.runtime.db) as uow:
        view = announcements.send_announcement(uow, world.actor(who), audience=audience, text=text)
    return view.announcement.id


def emails_of(world: World) -> dict[str, str]:
    """Every client of practice A with an address: name -> address."""
    with unit_of_work(world.runtime.db, write=False) as uow:
        found = clients.list_clients(uow, world.actor("olivia"), q="")
    return {c.name: c.email for c in found if c.email}


def reachable(world: World) -> set[str]:
    """The addresses AN1's alert should reach: active clients with portal access."""
    with unit_of_work(world.runtime.db, write=False) as uow:
        found = clients.list_clients(uow, world.actor("olivia"), q="")
    return {c.email for c in found if c.email and c.active and c.portal_access}


def test_an1_nt1_alert_reaches_each_recipient_without_health_information(
    world: World, sink: SmtpSink
):
    marker = f"PHIMARK{uuid.uuid4().hex[:12]}"
    owner = world.actor("olivia")
    with unit_of_work(world.runtime.db) as uow:
        c = clients.create_client(
            uow,
            owner,
            name=f"Client {marker}",
            email=f"an1-{uuid.uuid4().hex[:8]}@example.test",
            primary_clinician_id=world.id("carl"),
        )
    with unit_of_work(world.runtime.db) as uow:
        clients.enable_client_messaging(uow, owner, c.id)
    with unit_of_work(world.runtime.db) as uow:  # the name stays out: not opted in
        uow.practices.update_practice(world.practice_a, name=f"Practice {marker}")
        uow.commit()
    announce(world, "priya", Audience.ALL_CLIENTS, f"Closed on Friday {marker}")
    drain(runner_for(world, sink))
    expected = reachable(world)
    assert c.email in expected and len(expected) >= 2
    got = list(sink.received)
    assert sorted(a for r in got for a in r.rcpt_tos) == sorted(expected)  # one each
    for r in got:
        msg = r.message
        raw = r.raw.decode("utf-8", "replace")
        assert marker not in raw
        for part in msg.walk():
            if not part.is_multipart():
                assert marker not in str(part.get_content())
        assert msg["Subject"] == SUBJECT
        assert msg["Auto-Submitted"] == "auto-generated"
        assert r.link().endswith("/portal/announcements")
        assert msg.get_body(preferencelist=("html",)) is not None
    # Clients without portal access (casey) get no email; the announcement waits in
    # their portal all the same.
    assert set(emails_of(world).values()) - expected


def test_an1_one_alert_per_recipient_even_when_the_job_runs_again(world: World, sink: SmtpSink):
    made = announce(world, "carl", Audience.MY_CLIENTS, "Back on Monday")
    drain(runner_for(world, sink))
    first = len(sink.received)
    assert first == 1  # alex: carl's active client with portal access and an email
    # The same job again (a worker that died after the send would bring it back) and a
    # second job for the same recipient: the claim lets no second email out.
    with unit_of_work(world.runtime.db) as uow:
        uow.jobs.enqueue(
            world.practice_a,
            announcements.EMAIL_JOB,
            {"announcement_id": made, "client_id": world.id("alex")},
        )
        uow.commit()
    drain(runner_for(world, sink))
    assert len(sink.received) == first
    with world.runtime.db.engine.connect() as conn:
        sent = conn.execute(
            select(AuditRow.meta).where(
                AuditRow.chain_id == world.practice_a,
                AuditRow.action == "email.sent",
                AuditRow.target_id == world.id("alex"),
            )
        ).all()
    assert [json.loads(m)["template"] for (m,) in sent] == ["announcement"]


def test_an1_no_alert_when_portal_access_ended_before_the_job_ran(world: World, sink: SmtpSink):
    announce(world, "carl", Audience.MY_CLIENTS, "Holiday hours")
    with unit_of_work(world.runtime.db) as uow:
        clients.set_client_messaging(
            uow, world.actor("carl"), world.id("alex"), portal_access=False
        )
    drain(runner_for(world, sink))
    assert sink.received == []


def test_an1_no_alert_for_a_client_no_longer_active(world: World, sink: SmtpSink):
    announce(world, "carl", Audience.MY_CLIENTS, "New address")
    with world.runtime.write() as uow:
        uow.people.update_client(world.practice_a, ClientId(world.id("alex")), active=False)
        uow.commit()
    drain(runner_for(world, sink))
    assert sink.received == []


def test_nt1_alert_names_the_practice_only_when_it_chose_to(world: World, sink: SmtpSink):
    announce(world, "carl", Audience.MY_CLIENTS, "One")
    drain(runner_for(world, sink))
    assert sink.received[0].message["Subject"] == SUBJECT
    assert "Maple Street" not in sink.received[0].raw.decode()
    with unit_of_work(world.runtime.db) as uow:
        notifications.set_name_practice(uow, world.actor("olivia"), on=True)
    announce(world, "carl", Audience.MY_CLIENTS, "Two")
    drain(runner_for(world, sink))
    second = sink.received[1]
    assert second.message["Subject"] == f"{SUBJECT} from Maple Street"
    assert "Maple Street" in second.text()


def test_an1_alert_jobs_hold_ids_only(world: World):
    text = f"PHIMARK{uuid.uuid4().hex}"
    made = announce(world, "carl", Audience.MY_CLIENTS, text)
    with world.runtime.db.engine.connect() as conn:
        rows = conn.execute(
            select(JobRow.payload).where(
                JobRow.practice_id == world.practice_a, JobRow.kind == announcements.EMAIL_JOB
            )
        ).all()
    # alex has portal access and an email; casey (messaging never enabled) has no portal
    # access, so no alert, though the announcement waits for her in the portal.
    assert [json.loads(p) for (p,) in rows] == [
        {"announcement_id": made, "client_id": world.id("alex")}
    ]
    assert all(text not in p for (p,) in rows)
