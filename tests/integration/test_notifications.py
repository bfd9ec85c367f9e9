"""NT1-NT3 against a real SMTP server on 127.0.0.1 (aiosmtpd): no health information
in any email, one email per unread streak (exactly once, with time-machine), nothing
lost while SMTP is down."""

import random
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
import time_machine
from sqlalchemy import text

from confide.domain.actors import Party
from confide.jobs.runner import JobRunner
from confide.services import clients, messaging, notifications, reading, team
from confide.store.uow import unit_of_work
from tests.mailsink import Received, SmtpSink, drain, make_runner
from tests.personas import World, start

UNREAD = timedelta(minutes=10)


@pytest.fixture
def sink():
    s = SmtpSink()
    s.start()
    yield s
    s.stop()


def runner_for(world: World, sink: SmtpSink, **kw: object) -> JobRunner:
    return make_runner(
        world.runtime, sink, practices=frozenset({world.practice_a, world.practice_b}), **kw
    )


def send(world: World, by: str, conversation_id: int, text: str) -> None:
    with unit_of_work(world.runtime.db) as uow:
        messaging.send_message(
            uow,
            world.actor(by),
            messaging.SendMessage(conversation_id, text, f"k-{uuid.uuid4().hex}"),
        )


def read_all(world: World, who: str, conversation_id: int) -> None:
    with unit_of_work(world.runtime.db) as uow:
        reading.mark_read(uow, world.actor(who), conversation_id, seq=2**31 - 1)


def address(world: World, who: str) -> str:
    if who in world.emails:
        return world.emails[who]
    with unit_of_work(world.runtime.db, write=False) as uow:
        party = world.parties[who]
        if party.kind.value == "client":
            return str(uow.people.get_client(world.practice_of[who], party.id).email)
        return str(uow.people.get_contact(world.practice_of[who], party.id).email)


def all_parts(msg: EmailMessage) -> str:
    out = [f"{k}: {v}" for k, v in msg.items()]
    for part in msg.walk():
        if not part.is_multipart():
            out.append(str(part.get_content()))
    return "\n".join(out)


# --- NT1 -----------------------------------------------------------------------------


def test_nt1_no_marker_in_any_header_or_part_over_1000_messages(world: World, sink: SmtpSink):
    """1,000 random messages with unique markers in bodies, client names and away
    texts (members away too): no email holds any marker, in any header or part."""
    rng = random.Random(1)
    db, owner = world.runtime.db, world.actor("olivia")
    markers: list[str] = []

    def marker() -> str:
        m = f"PHIMARK{uuid.uuid4().hex[:12]}"
        markers.append(m)
        return m

    names = {}
    for i in range(6):
        with unit_of_work(db) as uow:
            c = clients.create_client(
                uow,
                owner,
                name=f"Client {marker()}",
                email=f"nt1-{i}-{uuid.uuid4().hex[:6]}@example.test",
                primary_clinician_id=world.id("carl"),
            )
        with unit_of_work(db) as uow:
            clients.enable_client_messaging(uow, owner, c.id)
        names[f"c{i}"] = c
        world.parties[f"c{i}"], world.practice_of[f"c{i}"] = c.party, world.practice_a
    for who in ("carl", "fiona", "bill"):
        with unit_of_work(db) as uow:
            team.set_away(uow, world.actor(who), on=True, text=f"Away {marker()}")
    with unit_of_work(db) as uow:  # the practice name stays out unless the practice opts in
        uow.practices.update_practice(world.practice_a, name=f"Practice {marker()}")
        uow.commit()
    convs: list[tuple[str, str, int]] = []
    for i in range(6):
        sent = start(world, "carl", client=f"c{i}", text=marker())
        convs.append(("carl", f"c{i}", sent.conversation.id))
    for a, b in (("carl", "fiona"), ("bill", "sally"), ("fiona", "bill")):
        convs.append((a, b, start(world, a, members=(b,), text=marker()).conversation.id))
    t0 = datetime.now(UTC)
    with time_machine.travel(t0, tick=False) as clock:
        for i in range(1000 - len(convs)):
            a, b, cid = rng.choice(convs)
            by = a if rng.random() < 0.6 else b
            send(world, by, cid, f"{marker()} {rng.choice(['hello', 'call me', ''])}")
            if rng.random() < 0.05:
                read_all(world, b if by == a else a, cid)
            if i % 100 == 0:
                clock.shift(timedelta(minutes=2))
                drain(runner_for(world, sink))
        clock.shift(UNREAD + timedelta(minutes=1))
        drain(runner_for(world, sink))
    got = list(sink.received)
    assert len(got) >= 9, len(got)
    templates = {r.message["Subject"] for r in got}
    assert "You have a new secure message" in templates
    assert "A secure message is waiting for you" in templates
    for r in got:
        msg = r.message
        raw = r.raw.decode("utf-8", "replace")
        parts = all_parts(msg)
        leaked = [m for m in markers if m in raw or m in parts]
        assert not leaked, (leaked, msg["Subject"])
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg.get_body(preferencelist=("plain",)) is not None
        assert msg.get_body(preferencelist=("html",)) is not None
    # Every email sent is audited, by ids only.
    with unit_of_work(db, write=False) as uow:
        metas = [
            m
            for (m,) in uow.conn.execute(
                text("SELECT meta FROM audit_log WHERE action = 'email.sent' AND chain_id = :p"),
                {"p": world.practice_a},
            )
        ]
    ours = [r for r in got if r.message_id.startswith(f"<notification-{int(world.practice_a)}-")]
    assert len(metas) == len(ours) > 0
    for meta in metas:
        assert "@" not in meta and not any(m in meta for m in markers)


def test_nt1_practice_named_only_when_the_practice_turns_it_on(world: World, sink: SmtpSink):
    alex = address(world, "alex")
    conv = start(world, "carl", client="alex", text="first").conversation.id
    drain(runner_for(world, sink))
    assert "Maple Street" not in sink.to(alex)[0].raw.decode()
    with unit_of_work(world.runtime.db) as uow:
        notifications.set_name_practice(uow, world.actor("olivia"), on=True)
    read_all(world, "alex", conv)
    send(world, "carl", conv, "second")
    drain(runner_for(world, sink))
    second = sink.to(alex)[1]
    assert second.message["Subject"] == "You have a new secure message from Maple Street"
    assert "Maple Street" in second.text()


# --- NT2 / NT3: exactly once -------------------------------------------------------------

PAIRS = (  # (member side, other side)
    ("carl", "alex"),
    ("betty", "jordan"),
    ("betty", "pat"),
    ("olivia", "nora"),
    ("carl", "fiona"),
    ("bill", "sally"),
)


def _oracle(events: list[tuple[int, str, str, int]], drains: list[int], members: set[str]):
    """The expected emails from SPEC alone: per (conversation, recipient), a streak is
    named by the read position it started from. A client-side recipient gets one email
    for a streak that is unread at any run of the jobs (NT2: at once); a member, one
    when some message of the streak stayed unread for 10 minutes (NT3)."""
    expected: set[tuple[int, str, int]] = set()
    # Every conversation starts with one message, read by both sides.
    state: dict[tuple[int, str], dict[str, object]] = defaultdict(lambda: {"read": 1, "unread": []})
    seqs: dict[int, int] = defaultdict(lambda: 1)
    order = {"send": 0, "read": 1}
    # The order the test acts in: per step, sends, then reads (each in list order),
    # then the job run.
    timeline = sorted(
        [(t, order[kind], i, kind, who, cid) for i, (t, kind, who, cid) in enumerate(events)]
        + [(t, 2, 0, "drain", "", 0) for t in drains]
    )
    parties_of = {cid: (a, b) for (a, b, cid) in CONVS_FOR_ORACLE}
    for t, _order, _i, kind, who, cid in timeline:
        if kind == "send":
            seqs[cid] += 1
            a, b = parties_of[cid]
            other = b if who == a else a
            st = state[(cid, who)]
            st["read"], st["unread"] = seqs[cid], []  # sending reads
            state[(cid, other)]["unread"].append((seqs[cid], t))  # type: ignore[attr-defined]
        elif kind == "read":
            st = state[(cid, who)]
            st["read"], st["unread"] = seqs[cid], []
        else:
            for (c, party), st in state.items():
                unread = st["unread"]
                if not unread:
                    continue
                streak = int(st["read"])  # type: ignore[arg-type]
                if party in members:
                    if any(t >= sent + int(UNREAD.total_seconds()) for _s, sent in unread):  # type: ignore[attr-defined]
                        expected.add((c, party, streak))
                else:
                    expected.add((c, party, streak))
    return expected


CONVS_FOR_ORACLE: list[tuple[str, str, int]] = []


def test_nt2_nt3_exactly_once_over_1000_messages_with_random_read_times(
    world: World, sink: SmtpSink
):
    """1,000 messages over 20 minutes in six conversations (member-client, member-
    contact, member-member), random reads at random times: the emails sent equal the
    expected set. None missing, none extra, none for a message read in time."""
    rng = random.Random(7)
    members = {"carl", "betty", "olivia", "fiona", "bill", "sally"}
    CONVS_FOR_ORACLE.clear()
    for a, b in PAIRS * 4:
        if b in members:
            cid = start(world, a, members=(b,), text="hi").conversation.id
        elif b == "pat":
            cid = start(world, a, contact="pat", text="hi").conversation.id
        else:
            cid = start(world, a, client=b, text="hi").conversation.id
        read_all(world, b, cid)  # the first message is read: streaks start afterwards
        CONVS_FOR_ORACLE.append((a, b, cid))
    step = 30  # seconds; sends, reads and job runs happen on this grid
    events: list[tuple[int, str, str, int]] = []
    for _ in range(1000):
        a, b, cid = rng.choice(CONVS_FOR_ORACLE)
        t = rng.randrange(0, 20 * 60, step)
        by = a if rng.random() < 0.7 else b
        events.append((t, "send", by, cid))
        reader = b if by == a else a
        if rng.random() < 0.5:
            events.append((t + rng.randrange(0, 16 * 60, step), "read", reader, cid))
    horizon = 40 * 60
    drains = list(range(0, horizon + step, step))
    expected = _oracle(events, drains, members)
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    by_time: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
    for t, kind, who, cid in events:
        by_time[t].append((kind, who, cid))
    runner = runner_for(world, sink)
    with time_machine.travel(t0, tick=False) as clock:
        for t in drains:
            clock.move_to(t0 + timedelta(seconds=t))
            for kind, who, cid in sorted(by_time.get(t, []), key=lambda e: e[0] == "read"):
                if kind == "send":
                    send(world, who, cid, "x")
                else:
                    read_all(world, who, cid)
            drain(runner)
    recipients = {address(world, p): p for pair in PAIRS for p in pair}
    got: list[tuple[int, str, int]] = []
    ids = [r.message_id for r in sink.received if set(r.rcpt_tos) & set(recipients)]
    assert len(ids) == len(set(ids)), "an email was sent twice"
    with unit_of_work(world.runtime.db, write=False) as uow:
        rows = uow.conn.execute(
            text(
                "SELECT id, conversation_id, party_kind, party_id, streak, state "
                "FROM notifications WHERE practice_id = :p"
            ),
            {"p": world.practice_a},
        ).all()
    names = {(p.kind.value, p.id): n for n, p in world.parties.items()}
    by_id = {f"notification-{int(world.practice_a)}-{r[0]}": r for r in rows}
    for mid in ids:
        r = by_id[mid.strip("<>").split("@")[0]]
        assert r[5] == "sent"
        got.append((r[1], names[(r[2], r[3])], r[4]))
    assert len(expected) > 100, len(expected)
    assert set(got) == expected, {
        "missing": sorted(expected - set(got))[:10],
        "extra": sorted(set(got) - expected)[:10],
    }


def test_nt3_read_at_9_59_sends_nothing_unread_at_10_00_sends_one(world: World, sink: SmtpSink):
    carl = world.emails["carl"]
    conv = start(world, "fiona", members=("carl",), text="a").conversation.id
    other = start(world, "bill", members=("carl",), text="b").conversation.id
    t0 = datetime.now(UTC)
    runner = runner_for(world, sink)
    with time_machine.travel(t0, tick=False) as clock:
        send(world, "fiona", conv, "new")
        send(world, "bill", other, "new")
        drain(runner)
        clock.shift(UNREAD - timedelta(seconds=1))
        read_all(world, "carl", conv)
        drain(runner)
        assert sink.to(carl) == []
        clock.shift(timedelta(seconds=1))
        drain(runner)
        assert len(sink.to(carl)) == 1
        send(world, "bill", other, "more in the same streak")
        clock.shift(UNREAD * 2)
        drain(runner)
    assert len(sink.to(carl)) == 1  # one per unread streak


def test_nt3_member_preference_off_means_no_email(world: World, sink: SmtpSink):
    carl = world.emails["carl"]
    with unit_of_work(world.runtime.db) as uow:
        notifications.set_email_preference(uow, world.actor("carl"), on=False)
    start(world, "fiona", members=("carl",), text="a")
    with time_machine.travel(datetime.now(UTC) + UNREAD + timedelta(minutes=1), tick=False):
        drain(runner_for(world, sink))
    assert sink.to(carl) == []
    api = world.api("carl")
    assert api.get("/api/v1/me/notifications").json() == {"email_new_messages": False}
    assert api.put("/api/v1/me/notifications", json={"email_new_messages": True}).json() == {
        "email_new_messages": True
    }


def test_nt2_one_email_per_streak_and_a_new_one_after_reading(world: World, sink: SmtpSink):
    alex = address(world, "alex")
    conv = start(world, "carl", client="alex", text="one").conversation.id
    send(world, "carl", conv, "two")
    send(world, "carl", conv, "three")
    drain(runner_for(world, sink))
    assert len(sink.to(alex)) == 1
    read_all(world, "alex", conv)
    send(world, "carl", conv, "four")
    drain(runner_for(world, sink))
    assert len(sink.to(alex)) == 2
    with time_machine.travel(datetime.now(UTC) + UNREAD * 2, tick=False):
        drain(runner_for(world, sink))
    assert len(sink.to(alex)) == 2  # NT3 for a client: only if no email went out yet


def test_nt2_no_email_once_the_client_messaging_is_off(world: World, sink: SmtpSink):
    alex = address(world, "alex")
    start(world, "carl", client="alex", text="one")
    with unit_of_work(world.runtime.db) as uow:
        clients.set_client_messaging(
            uow, world.actor("olivia"), world.id("alex"), messaging_enabled=False
        )
    drain(runner_for(world, sink))
    assert sink.to(alex) == []


# --- SMTP down, then up -------------------------------------------------------------------


def test_nt2_smtp_down_then_up_loses_no_email(world: World, sink: SmtpSink):
    sink.stop()
    alex, jordan = address(world, "alex"), address(world, "jordan")
    start(world, "carl", client="alex", text="one")
    start(world, "betty", client="jordan", text="two")
    runner = runner_for(world, sink)
    for _ in range(3):
        drain(runner)  # every attempt fails: connection refused
        time.sleep(0.2)
    with unit_of_work(world.runtime.db, write=False) as uow:
        pending = uow.conn.execute(
            text(
                "SELECT count(*) FROM jobs WHERE kind = 'notify.client_email' "
                "AND done_at IS NULL AND attempts > 1 AND practice_id = :p"
            ),
            {"p": world.practice_a},
        ).scalar_one()
    assert pending == 2
    sink.start()
    end = time.monotonic() + 15
    while time.monotonic() < end and not (sink.to(alex) and sink.to(jordan)):
        drain(runner)
        time.sleep(0.1)
    assert len(sink.to(alex)) == 1 and len(sink.to(jordan)) == 1


def party_of(world: World, name: str) -> Party:
    return world.parties[name]


def received_ids(rs: list[Received]) -> list[str]:
    return [r.message_id for r in rs]
