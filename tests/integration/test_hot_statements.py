"""The send path's statements on the driver's cursor (store/hot.py), on SQLite and on
PostgreSQL: the same rows as `Connection.execute`, the same parameters (literals, type
processors), and the same exceptions, in the unit of work's transaction."""

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from confide.realtime.frames import EVENT_KINDS
from confide.store.clock import aware, utcnow
from confide.store.hot import HotStatement
from confide.store.repos import conversations, events, outbox, people, sessions
from confide.store.repos.audit import verify_chains
from confide.store.tables import ClientRow, ConversationRow, OutboxRow, PracticeRow, core
from confide.store.uow import unit_of_work
from tests.personas import World, start


def _both(world: World, hot: HotStatement, params: dict[str, object]) -> tuple[list, list]:
    with unit_of_work(world.runtime.db, write=False) as uow:
        through_sqlalchemy = [tuple(r) for r in uow.conn.execute(hot.statement, params)]
        on_the_cursor = [tuple(r) for r in hot.rows(uow.conn, params)]
    return through_sqlalchemy, on_the_cursor


def test_rows_equal_those_of_connection_execute_with_their_types(world: World):
    sent = start(world, "carl", client="alex")
    cid, pid = sent.conversation.id, world.practice_a
    for i in range(3):  # four messages: pages of two before, after and at the newest
        r = world.api("carl").post(
            f"/api/v1/conversations/{cid}/messages",
            json={"text": f"more {i}", "idempotency_key": f"more-{i}"},
        )
        assert r.status_code == 201
    cases = [
        (conversations._CONVERSATION_WITH_PARTICIPANTS, {"pid": pid, "cid": cid}),
        (people._GET_CLIENT, {"pid": pid, "id": world.id("alex")}),
        (people._GRANTS_OF, {"pid": pid, "mid": world.id("gus")}),  # granted nora
        (people._GET_MEMBER, {"pid": pid, "id": world.id("carl")}),
        (conversations._PAGE_NEWEST, {"pid": pid, "cid": cid, "limit": 2}),
        (conversations._PAGE_BEFORE, {"pid": pid, "cid": cid, "limit": 2, "seq": 3}),
        (conversations._PAGE_AFTER, {"pid": pid, "cid": cid, "limit": 2, "seq": 1}),
        (
            conversations._UNREAD_IN_ONE,  # alex has read none of carl's four
            {"pid": pid, "cid": cid, "kind": "client", "party": world.id("alex")},
        ),
        # No relay runs here: the outbox rows wait, and the log is empty or not.
        (events._pending(EVENT_KINDS), {"now": utcnow(), "limit": 10}),
    ]
    for hot, params in cases:
        expected, got = _both(world, hot, params)
        assert got == expected and got, hot.statement
    # Datetimes come back as datetimes, booleans as booleans, by column name too.
    with unit_of_work(world.runtime.db, write=False) as uow:
        client = people._GET_CLIENT.one_or_none(uow.conn, {"pid": pid, "id": world.id("alex")})
        conversation = conversations._CONVERSATION_WITH_PARTICIPANTS.rows(
            uow.conn, {"pid": pid, "cid": cid}
        )[0]
    assert client.name and client.created_at.year >= 2026
    expected, got = _both(world, events._HEAD, {})
    assert got == expected
    with unit_of_work(world.runtime.db, write=False) as uow:
        assert uow.conversations.unread_in(pid, cid, world.actor("alex").party, cap=3) == 3
    assert isinstance(client.messaging_enabled, bool)
    assert conversation.last_seq == 4 and conversation.last_activity_at.year >= 2026


def test_the_token_check_finds_its_holder_and_nothing_for_an_unknown_hash(world: World):
    with unit_of_work(world.runtime.db, write=False) as uow:
        assert uow.sessions.find_api_token("0" * 64) is None
    assert world.api("carl").get("/api/v1/me").json()["id"] == world.id("carl")
    expected, got = _both(world, sessions._FIND_TOKEN, {"hash": "0" * 64})
    assert got == expected == []


def test_writes_take_literals_and_bound_values_and_return_what_they_changed(world: World):
    cid = start(world, "carl", client="alex").conversation.id
    now = utcnow()
    with unit_of_work(world.runtime.db) as uow:
        # `last_seq + 1`: the literal 1 is bound by the statement itself.
        seq = conversations._NEXT_SEQ.scalar_one(
            uow.conn, {"pid": world.practice_a, "cid": cid, "now": now}
        )
        stored = uow.conn.execute(
            select(ConversationRow.last_seq, ConversationRow.last_activity_at).where(
                ConversationRow.id == cid
            )
        ).one()
        uow.rollback()
    assert seq == 2 and stored.last_seq == 2
    assert aware(stored.last_activity_at) == now  # the datetime went through its processor


def test_a_constraint_violation_raises_sqlalchemys_integrity_error(world: World):
    hot = HotStatement(
        insert(core(PracticeRow)).values(
            id=bindparam("id"),
            name="Twice",
            plan="plus",
            team_messaging=True,
            client_messaging=True,
            auto_allow_new_clients=False,
            created_at=bindparam("at"),
        )
    )
    with unit_of_work(world.runtime.db) as uow:
        with pytest.raises(IntegrityError):
            hot.rows(uow.conn, {"id": world.practice_a, "at": utcnow()})  # its primary key
        uow.rollback()


def test_a_statement_with_an_in_list_is_refused_when_first_run(world: World):
    hot = HotStatement(
        update(ClientRow).where(ClientRow.id.in_(bindparam("ids", expanding=True))).values(name="x")
    )
    with unit_of_work(world.runtime.db) as uow, pytest.raises(ValueError, match="expanding"):
        hot.rows(uow.conn, {"ids": [1]})


def test_many_inserts_every_row_in_order_and_audit_chains_still_verify(world: World):
    now = utcnow()
    rows = [
        {
            "practice_id": world.practice_a,
            "kind": "test.hot",
            "payload": f'{{"n":{i}}}',
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        }
        for i in range(5)
    ]
    with unit_of_work(world.runtime.db) as uow:
        outbox._INSERT.many(uow.conn, rows)
        outbox._INSERT.many(uow.conn, [])  # nothing to insert: no statement
        stored = uow.conn.execute(
            select(OutboxRow.payload, OutboxRow.created_at)
            .where(OutboxRow.kind == "test.hot", OutboxRow.practice_id == world.practice_a)
            .order_by(OutboxRow.id)
        ).all()
        uow.rollback()
    assert [p for p, _ in stored] == [f'{{"n":{i}}}' for i in range(5)]
    assert all(aware(at) == now for _, at in stored)
    # The audit rows of everything above went in through `many` too: the chains verify.
    start(world, "carl", client="alex")
    with world.runtime.db.engine.connect() as conn:
        report = verify_chains(conn, world.runtime.db.keys)
    assert report.ok and report.rows > 0, report.problems


def test_after_a_rollback_the_next_transaction_holds_what_runs_on_the_cursor(world: World):
    """`Connection.execute` begins a new transaction by itself after a rollback; the
    cursor's statements must too, or the unit of work's commit and rollback would miss
    them (found by the OIDC refusal's audit row, written after a rollback: lost on
    PostgreSQL)."""
    cid = start(world, "carl", client="alex").conversation.id
    params = {"pid": world.practice_a, "cid": cid, "now": utcnow()}
    with unit_of_work(world.runtime.db) as uow:
        uow.rollback()
        conversations._NEXT_SEQ.scalar_one(uow.conn, params)
        uow.rollback()  # undoes it
        assert conversations._NEXT_SEQ.scalar_one(uow.conn, params) == 2
        uow.commit()  # keeps it
    with unit_of_work(world.runtime.db, write=False) as uow:
        seq = uow.conn.execute(
            select(ConversationRow.last_seq).where(ConversationRow.id == cid)
        ).scalar_one()
    assert seq == 2


@pytest.mark.parametrize("fresh", [True, False], ids=["unknown", "in the identity map"])
def test_members_by_id_are_those_list_members_reads(world: World, fresh: bool):
    """A page's few participants come one by one on the cursor (or from the unit of
    work's map), a batch's many senders in one query: the same members either way, and
    an id that is no member is left out."""
    pid = world.practice_a
    names = ["carl", "gus", "olivia", "sally", "dora", "bea"]
    ids = [world.id(n) for n in names if world.actor(n).practice_id == pid]
    assert len(ids) > people.FEW_BY_ID
    for wanted in (ids[:2], ids, [*ids[:1], 10**9]):
        with unit_of_work(world.runtime.db, write=False) as uow:
            listed = {m.id: m for m in uow.people.list_members(pid, wanted)}
            if fresh:
                uow.people.forget()
            assert uow.people.members_by_id(pid, wanted) == listed
        assert len(listed) == len([i for i in wanted if i != 10**9])
