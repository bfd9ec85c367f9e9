"""Lookups of several rows by key seek each key, whatever the practice's size.

SQLite plans without statistics here: it guesses that an equality on an index's first
column matches about ten rows, and then chose the practice's index over the key:
`practice_id = ? AND id IN (…)` walked every index entry of the practice (a practice
of 116,000 messages: 21 ms for the real-time hub's 40 messages, against 0.06 ms by
key), and so did a conversation's participants on every send (a practice of 20,000
conversations: 20.7 ms a send in process, against 0.89 ms). The practice stays in the
statement as a filter (`store.repos.scope_only`). The plan depends on the schema, not
on the rows, so an empty database shows it. PostgreSQL plans from its statistics: its
rows are checked, not its plans."""

import pytest
from sqlalchemy import Executable, Select
from sqlalchemy.dialects import sqlite

from confide.store.repos import conversations, people
from confide.store.uow import unit_of_work
from tests.personas import World, start

IDS = list(range(1, 41))
LITERAL = {"literal_binds": True}
PARAMS: dict[str, object] = {
    "pid": 1,
    "ids": IDS,
    "parties": IDS,
    "mid": 1,
    "cid": 1,
    "seq": 1,
    "kind": "member",
    "party": 1,
}
BY_PK = "USING INTEGER PRIMARY KEY"
GRANTS_BY_MEMBER = "client_access_grants USING COVERING INDEX ix_client_access_grants_member"
UNREAD_ONLY = "conversation_participants USING INDEX ix_participants_unread"
BY_CONVERSATION = (
    "conversation_participants USING INDEX sqlite_autoindex_conversation_participants_1"
)

# Each statement, and what its plan must use (every step named, in order).
PLANS: dict[str, tuple[Executable, list[str]]] = {
    # The real-time hub's batch (realtime/frames.py), the page's participants.
    "messages by id": (conversations._MESSAGES_IN, [f"messages {BY_PK}"]),
    "conversations by id": (conversations._CONVERSATIONS_IN, [f"conversations {BY_PK}"]),
    "participants of conversations": (conversations._PARTICIPANTS_IN, [BY_CONVERSATION]),
    "members by id": (people._MEMBERS_IN, [f"members {BY_PK}"]),
    "clients by id": (people._CLIENTS_IN, [f"clients {BY_PK}"]),
    # The send path: the conversation with its participants, and their unread counts.
    "conversation with participants": (
        conversations._CONVERSATION_WITH_PARTICIPANTS.statement,
        [f"conversations {BY_PK}", BY_CONVERSATION],
    ),
    "a message sent": (conversations._SENT.statement, [BY_CONVERSATION]),
    "a message removed": (conversations._REMOVED, [BY_CONVERSATION]),
    "read up to": (conversations._MARK_READ, [BY_CONVERSATION]),
    # A party's unread totals (the red bubble, the hub's unread frames): only the rows
    # with something unread, not every conversation the party ever had.
    "unread of a party": (conversations._UNREAD_OF_PARTY, [UNREAD_ONLY]),
    "unread of parties": (conversations._UNREAD_OF_PARTIES, [UNREAD_ONLY]),
    # The access rule's facts of a member (every send and page of a clinician with basic
    # access), a client's contacts.
    "grants of a member": (people._GRANTS_OF.statement, [GRANTS_BY_MEMBER]),
    "grants of members": (people._GRANTS_OF_MANY, [GRANTS_BY_MEMBER]),
    "contacts of a client": (people._CONTACTS_OF, ["contacts USING INDEX ix_contacts_client_id"]),
}


def _plan(world: World, stmt: Executable) -> list[str]:
    dialect = sqlite.dialect()
    if isinstance(stmt, Select):  # with its IN-lists written out
        sql = str(stmt.params(PARAMS).compile(dialect=dialect, compile_kwargs=LITERAL))
        args: tuple[object, ...] = ()
    else:  # an UPDATE: no IN-list, its parameters in order
        compiled = stmt.compile(dialect=dialect)
        values = compiled.construct_params(PARAMS)
        sql, args = str(compiled), tuple(values[n] for n in compiled.positiontup or ())
    with unit_of_work(world.runtime.db, write=False) as uow:
        return [r[3] for r in uow.conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", args)]


@pytest.mark.parametrize("name", sorted(PLANS))
def test_a_lookup_by_keys_seeks_each_key_not_the_practice(world: World, name: str):
    if world.runtime.db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans from its statistics")
    stmt, expected = PLANS[name]
    plan = [step for step in _plan(world, stmt) if "SUBQUERY" not in step]
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert len(searches) >= len(expected), plan
    for step, wanted in zip(searches, expected, strict=False):
        assert wanted in step, plan
    assert not any("(practice_id=?)" in step for step in plan), plan


def test_the_lookups_by_key_still_hold_to_the_practice(world: World):
    """The practice is a filter now, not the way in: another practice's ids find
    nothing, on either database (RC1 scoping, PM7)."""
    sent = start(world, "carl", client="alex")
    mid, cid = sent.message.id, sent.conversation.id
    mine, other = world.practice_a, world.practice_b
    with unit_of_work(world.runtime.db, write=False) as uow:
        assert set(uow.conversations.get_messages(mine, [mid])) == {mid}
        assert uow.conversations.get_messages(other, [mid]) == {}
        assert uow.conversations.client_ids_of(mine, [cid]) == {cid: world.id("alex")}
        assert uow.conversations.client_ids_of(other, [cid]) == {}
        for stmt, practice, found in [
            (conversations._CONVERSATIONS_IN, mine, 1),
            (conversations._CONVERSATIONS_IN, other, 0),
            (conversations._PARTICIPANTS_IN, mine, 2),
            (conversations._PARTICIPANTS_IN, other, 0),
        ]:
            rows = uow.conn.execute(stmt, {"pid": practice, "ids": [cid]}).all()
            assert len(rows) == found, (stmt, practice)
        carl, alex = world.id("carl"), world.id("alex")
        assert len(uow.conn.execute(people._MEMBERS_IN, {"pid": mine, "ids": [carl]}).all()) == 1
        assert uow.conn.execute(people._MEMBERS_IN, {"pid": other, "ids": [carl]}).all() == []
        assert len(uow.conn.execute(people._CLIENTS_IN, {"pid": mine, "ids": [alex]}).all()) == 1
        assert uow.conn.execute(people._CLIENTS_IN, {"pid": other, "ids": [alex]}).all() == []
