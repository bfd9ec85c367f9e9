"""MS7's unread counts are kept on the participant rows (`unread_count`), moved by the
writes that change them: a send, a read, a removal. These tests hold the kept counts
against a recount over the messages after random mixes of those writes, one after
another and concurrently (PostgreSQL: the conversation's row lock orders them), and
check the migration that fills them in."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import and_, func, inspect, select

from confide.domain.actors import Party, PartyKind
from confide.domain.errors import DomainError
from confide.domain.ids import ConversationId
from confide.runtime import build_runtime
from confide.services import clients, messaging, reading, team
from confide.store import migrate
from confide.store.db import make_engine
from confide.store.tables import Base, MessageRow, ParticipantRow
from confide.store.uow import unit_of_work
from tests.conftest import make_settings
from tests.crash_harness import own_database
from tests.personas import World, build_world, start

PEOPLE = ("alex", "carl", "sam", "bill")  # alex's group: her clinician, his supervisor, billing
TEAM = ("carl", "sam", "bill")


def kept_and_counted(world: World, conv: int) -> tuple[dict[Party, int], dict[Party, int]]:
    """(the kept counts, a recount over the messages) for every participant."""
    p, m = ParticipantRow, MessageRow
    with world.runtime.db.engine.connect() as conn:
        rows = conn.execute(
            select(p.party_kind, p.party_id, p.unread_count, p.last_read_seq).where(
                p.conversation_id == conv
            )
        ).all()
        kept, counted = {}, {}
        for kind, pid, unread, last_read in rows:
            party = Party(PartyKind(kind), pid)
            kept[party] = unread
            counted[party] = conn.execute(
                select(func.count())
                .select_from(m)
                .where(
                    m.conversation_id == conv,
                    m.seq > last_read,
                    m.removed_at.is_(None),
                    ~and_(m.sender_kind == kind, m.sender_id == pid),
                )
            ).scalar_one()
    return kept, counted


def send(world: World, who: str, conv: int, words: str = "hello") -> messaging.Sent:
    with unit_of_work(world.runtime.db) as uow:
        return messaging.send_message(
            uow, world.actor(who), messaging.SendMessage(conv, words, uuid.uuid4().hex)
        )


def read_to(world: World, who: str, conv: int, seq: int) -> int:
    with unit_of_work(world.runtime.db) as uow:
        return reading.mark_read(uow, world.actor(who), conv, seq=seq)


def open_page(world: World, who: str, conv: int, before_seq: int | None) -> None:
    with unit_of_work(world.runtime.db) as uow:
        reading.open_conversation(uow, world.actor(who), conv, before_seq=before_seq, limit=3)


def remove(world: World, who: str, conv: int, message_id: int) -> None:
    with unit_of_work(world.runtime.db) as uow:
        messaging.remove_message(uow, world.actor(who), conv, message_id)


def unread_total(world: World, who: str) -> int:
    with unit_of_work(world.runtime.db, write=False) as uow:
        return reading.unread_total(uow, world.actor(who))


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(PEOPLE), st.just(0)),
        st.tuples(st.just("read"), st.sampled_from(PEOPLE), st.integers(0, 30)),
        st.tuples(st.just("open"), st.sampled_from(PEOPLE), st.integers(0, 30)),
        st.tuples(st.just("remove"), st.sampled_from(TEAM), st.integers(0, 30)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=OPS)
def test_ms7_kept_unread_counts_equal_a_recount_after_any_sends_reads_and_removals(
    world: World, ops: list[tuple[str, str, int]]
):
    conv = start(world, "alex", members=TEAM, text="first").conversation.id
    sent: dict[str, list[int]] = {who: [] for who in PEOPLE}
    last_seq = 1
    for op, who, n in ops:
        if op == "send":
            last_seq = send(world, who, conv).message.seq
            sent[who].append(last_seq)
        elif op == "read":
            left = read_to(world, who, conv, n % (last_seq + 1))
            kept, counted = kept_and_counted(world, conv)
            assert left == counted[world.parties[who]]  # what the API answers
        elif op == "open":  # a page reads up to its newest message (MS7)
            open_page(world, who, conv, before_seq=None if n % 3 == 0 else 1 + n % last_seq)
        elif sent[who]:  # remove one of the member's own messages (MS6)
            seq = sent[who][n % len(sent[who])]
            with unit_of_work(world.runtime.db, write=False) as uow:
                [msg] = uow.conversations.list_messages(
                    world.practice_of[who],
                    ConversationId(conv),
                    before_seq=seq + 1,
                    after_seq=seq - 1,
                    limit=1,
                    reveal_removed=True,
                )
            if msg.removed_at is None:
                remove(world, who, conv, msg.id)
        kept, counted = kept_and_counted(world, conv)
        assert kept == counted, (op, who, n)


def test_ms7_the_red_bubble_is_the_sum_of_the_kept_counts(world: World):
    one = start(world, "carl", client="alex", text="one").conversation.id
    two = start(world, "sam", client="alex", text="two").conversation.id
    others = unread_total(world, "alex") - 2  # whatever else the world holds for alex
    send(world, "carl", one)
    send(world, "sam", two)
    send(world, "sam", two)
    assert unread_total(world, "alex") == others + 2 + 3
    read_to(world, "alex", two, 2)  # seq 3 of "two" left
    assert unread_total(world, "alex") == others + 2 + 1
    read_to(world, "alex", one, 2)
    assert unread_total(world, "alex") == others + 1


def test_ms7_concurrent_sends_reads_and_removals_leave_exact_counts(world: World):
    """Many threads on one conversation: two members send and remove, alex and bill
    read to changing positions. On PostgreSQL the writes run concurrently (READ COMMITTED); a
    read's recount must not miss a send or removal that commits meanwhile."""
    conv = start(world, "alex", members=TEAM, text="first").conversation.id
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def member(who: str) -> None:
        barrier.wait()
        for i in range(25):
            msg = send(world, who, conv, f"{who} {i}").message
            if i % 4 == 0:
                remove(world, who, conv, msg.id)

    def reader(who: str) -> None:
        barrier.wait()
        for i in range(40):
            read_to(world, who, conv, (i * 7) % 40)  # bill never reads past 40 of 76
            if i % 5 == 0 and who == "alex":
                open_page(world, who, conv, before_seq=None)

    jobs = [("m", "carl"), ("m", "sam"), ("r", "alex"), ("r", "bill"), ("r", "alex"), ("r", "bill")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(member if k == "m" else reader, w) for k, w in jobs]
        for f in futures:
            if (exc := f.exception()) is not None:
                errors.append(exc)
    assert errors == []
    kept, counted = kept_and_counted(world, conv)
    assert kept == counted
    assert sum(counted.values()) > 0  # some stayed unread: the counts were exercised


def test_ms7_the_unread_count_migration_fills_in_the_counts_and_reverses(tmp_path: Path):
    """A database with history goes back to 0006 (the counts dropped) and up again: the
    migration counts every participant's unread messages over what is stored. On the
    suite's PostgreSQL run, in a database of the test's own."""
    with own_database("confide_unread") as db:
        _migrate_down_and_up(tmp_path, db.url)


def _migrate_down_and_up(tmp_path: Path, database_url: str) -> None:
    rt = build_runtime(make_settings(tmp_path / "data", database_url=database_url))
    try:
        world = build_world(rt)
        conv = start(world, "alex", members=TEAM, text="first").conversation.id
        for i, who in enumerate(["carl", "sam", "alex", "carl", "bill", "carl"]):
            msg = send(world, who, conv, f"{i}").message
            if i == 3:
                remove(world, "carl", conv, msg.id)
        read_to(world, "sam", conv, 3)
        before = kept_and_counted(world, conv)
        assert before[0] == before[1] and sum(before[0].values()) > 0
        migrate.downgrade(rt.db.engine, "0006")
        columns = {
            c["name"] for c in inspect(rt.db.engine).get_columns(ParticipantRow.__tablename__)
        }
        assert "unread_count" not in columns
        migrate.upgrade(rt.db.engine)
        assert kept_and_counted(world, conv) == before
    finally:
        rt.close()


def test_ms7_the_unread_count_migration_matches_the_tables(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'unread.db'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == [], diffs
    engine.dispose()


def test_ms7_red_bubbles_of_many_at_once_equal_each_ones_own(world: World):
    """`reading.unread_totals` (the hub's, after a batch of events: two queries per
    practice and kind of party) answers what `unread_total` answers actor by actor,
    for every persona of both practices: a member whose messaging box is off (EN2)
    sees 0, a member who lost access to a client does not count that client's
    conversations, and an actor `unread_total` refuses (a member no longer active)
    is left out."""
    start(world, "carl", client="alex", text="one")
    start(world, "sam", client="alex", text="two")
    start(world, "carl", members=("bill", "sam"), text="team")
    grant(world, "jordan", "carl", on=True)
    granted = start(world, "olivia", client="jordan", members=("carl",), text="grant")
    start(world, "owen", client="zoe", text="birch")
    send(world, "olivia", granted.conversation.id)  # carl and jordan have two unread
    pa = world.practice_a
    with unit_of_work(world.runtime.db) as uow:
        team.set_member_messaging(uow, world.actor("olivia"), world.id("bill"), enabled=False)
    with unit_of_work(world.runtime.db) as uow:
        team.update_member(uow, world.actor("olivia"), world.id("betty"), active=False)
    grant(world, "jordan", "carl", on=False)  # carl's access to jordan ends
    actors = [world.actor(name) for name in world.parties]
    with unit_of_work(world.runtime.db, write=False) as uow:
        together = reading.unread_totals(uow, actors)
    alone: dict[str, int | None] = {}
    for name in world.parties:
        with unit_of_work(world.runtime.db, write=False) as uow:
            try:
                alone[name] = reading.unread_total(uow, world.actor(name))
            except DomainError:
                alone[name] = None
    assert {n: together.get(world.actor(n)) for n in world.parties} == alone
    assert alone["betty"] is None and alone["bill"] == 0
    assert alone["alex"] and alone["jordan"] and alone["zoe"] and alone["sam"]
    with unit_of_work(world.runtime.db, write=False) as uow:  # carl's two are left out
        kept = uow.conversations.unread_by_conversation(pa, world.parties["carl"])
    assert kept[granted.conversation.id] == 2
    assert alone["carl"] == sum(kept.values()) - 2


def grant(world: World, client: str, member: str, *, on: bool) -> None:
    with unit_of_work(world.runtime.db) as uow:
        clients.set_client_access_grant(
            uow, world.actor("olivia"), world.id(client), world.id(member), on=on
        )
