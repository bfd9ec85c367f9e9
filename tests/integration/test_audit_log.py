"""RC1: every read of health information and every change is written to an audit log in
the same transaction; the log is append-only and tamper-evident.

Tampering happens inside a transaction that is rolled back afterwards (our "copy" of the
database: it works the same on SQLite and PostgreSQL and leaves the shared database
intact); the CLI test tampers with a SQLite file of its own.
"""

import json
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, func, insert, select, update

from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.runtime import build_runtime
from confide.store.repos.audit import GENESIS, AuditProblem, verify_chains
from confide.store.tables import AuditHeadRow, AuditRow, MessageRow
from confide.store.uow import UnitOfWork, unit_of_work
from tests.conftest import TEST_MASTER_KEY, make_settings
from tests.personas import World, build_world, start

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"
AUDIT_COLUMNS = [c.name for c in AuditRow.__table__.columns]


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4()}"


def audit_rows(world: World, chain: int, after_id: int = 0) -> list[dict[str, Any]]:
    with world.runtime.db.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(AuditRow.__table__)
                .where(AuditRow.chain_id == chain, AuditRow.id > after_id)
                .order_by(AuditRow.seq)
            )
        ]


def last_audit_id(world: World) -> int:
    with world.runtime.db.engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(AuditRow.id), 0))).scalar_one()


def audit_state(world: World) -> tuple[int, list[tuple[Any, ...]]]:
    with world.runtime.db.engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(AuditRow)).scalar_one()
        heads = [
            tuple(r) for r in conn.execute(select(AuditHeadRow.__table__).order_by("chain_id"))
        ]
    return count, heads


# --- what gets written ------------------------------------------------------------------


def test_rc1_send_open_and_remove_are_audited_with_who_what_which_and_where(world: World):
    carl, alex = world.api("carl"), world.api("alex")
    mark = last_audit_id(world)  # signing in is audited too; start after it
    r = carl.post(
        "/api/v1/conversations",
        json={"client_id": world.id("alex"), "text": canary(), "idempotency_key": "a1"},
    )
    assert r.status_code == 201, r.text
    conv, first = r.json()["conversation_id"], r.json()["message"]["id"]
    r = carl.post(
        f"/api/v1/conversations/{conv}/messages", json={"text": canary(), "idempotency_key": "a2"}
    )
    assert r.status_code == 201, r.text
    second = r.json()["message"]["id"]
    assert alex.get(f"/api/v1/conversations/{conv}").status_code == 200
    r = carl.delete(f"/api/v1/conversations/{conv}/messages/{second}")
    assert r.status_code == 200, r.text

    rows = audit_rows(world, world.practice_a, mark)
    got = [
        (r["action"], r["actor_kind"], r["actor_id"], r["target_kind"], r["target_id"])
        for r in rows
    ]
    carl_id, alex_id = world.id("carl"), world.id("alex")
    assert got == [
        ("conversation.started", "member", carl_id, "conversation", conv),
        ("message.sent", "member", carl_id, "message", first),
        ("message.sent", "member", carl_id, "message", second),
        ("conversation.opened", "client", alex_id, "conversation", conv),
        ("message.removed", "member", carl_id, "message", second),
    ]
    for row in rows:
        assert row["ip"] == "testclient"  # from where
        assert row["at"] is not None  # when
        assert row["via"] == ("magic_link" if row["actor_kind"] == "client" else "api_token")
        assert json.loads(row["meta"]).get("conversation_id", conv) == conv
    assert json.loads(rows[1]["meta"]) == {"conversation_id": conv, "seq": 1}
    assert json.loads(rows[3]["meta"]) == {"first_seq": 1, "last_seq": 2}
    # seqs continue the practice's chain without gaps
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(rows)))


def test_rc1_every_open_is_audited_even_when_nothing_changes(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    client = world.api("alex")
    mark = last_audit_id(world)
    for _ in range(3):
        assert client.get(f"/api/v1/conversations/{conv}").status_code == 200
    assert client.get(f"/api/v1/conversations/{conv}?mark_read=false").status_code == 200
    opened = [r for r in audit_rows(world, world.practice_a, mark)]
    assert [r["action"] for r in opened] == ["conversation.opened"] * 4


def test_rc1_no_message_text_names_or_emails_in_any_audit_column(world: World):
    carl, olivia = world.api("carl"), world.api("olivia")
    mark = last_audit_id(world)
    secret_text, client_name, client_email = canary(), canary(), f"{uuid.uuid4().hex}@canary.test"
    contact_name, away_text = canary(), canary()
    r = olivia.post(
        "/api/v1/clients",
        json={
            "name": f"Name {client_name}",
            "email": client_email,
            "primary_clinician_id": world.id("carl"),
        },
    )
    assert r.status_code == 201, r.text
    new_client = r.json()["id"]
    assert olivia.post(f"/api/v1/clients/{new_client}/enable-messaging").status_code == 200
    r = olivia.post(
        f"/api/v1/clients/{new_client}/contacts",
        json={"name": f"Contact {contact_name}", "relationship": "Parent"},
    )
    assert r.status_code == 201, r.text
    assert olivia.get(f"/api/v1/clients/{new_client}").status_code == 200
    r = carl.post(
        "/api/v1/conversations",
        json={"client_id": new_client, "text": f"Dear {secret_text}", "idempotency_key": "n1"},
    )
    assert r.status_code == 201, r.text
    conv = r.json()["conversation_id"]
    assert carl.get(f"/api/v1/conversations/{conv}").status_code == 200
    assert (
        carl.put("/api/v1/me/away", json={"on": True, "text": f"Away {away_text}"}).status_code
        == 200
    )
    failed_email = f"{uuid.uuid4().hex}@canary.test"
    r = world.api("alex").post(
        "/api/v1/auth/login", json={"email": failed_email, "password": "Pw " + secret_text}
    )
    assert r.status_code == 422
    r = world.api("alex").post(
        "/api/v1/auth/login", json={"email": world.emails["carl"], "password": "Pw " + secret_text}
    )
    assert r.status_code == 422

    with world.runtime.db.engine.connect() as conn:
        rows = [
            tuple(r) for r in conn.execute(select(AuditRow.__table__).where(AuditRow.id > mark))
        ]
        heads = [tuple(r) for r in conn.execute(select(AuditHeadRow.__table__))]
    actions = {row[AUDIT_COLUMNS.index("action")] for row in rows}
    assert {
        "client.created",
        "client.messaging_changed",
        "contact.added",
        "client.viewed",
        "conversation.started",
        "message.sent",
        "conversation.opened",
        "away.changed",
        "signin.failed",
    } <= actions  # the control: these events were all audited
    forbidden = [
        secret_text,
        client_name,
        client_email,
        contact_name,
        away_text,
        failed_email,
        world.emails["carl"],
        "Carl Test",
        "Olivia Owens",
        "Alex Client",
        "Dear",
    ]
    blob = "\n".join(repr(r) for r in rows + heads)
    for needle in forbidden:
        assert needle.lower() not in blob.lower(), f"{needle!r} is in the audit log"


# --- refused and failed transactions write nothing --------------------------------------


@pytest.mark.parametrize(
    "attempt",
    ["member_box_off", "recipient_box_off", "blank", "too_long", "other_practice", "client_off"],
)
def test_rc1_a_refused_send_writes_no_audit_rows(world: World, attempt: str):
    conv = start(world, "carl", client="alex").conversation.id
    theirs = start(world, "bea", client="zoe").conversation.id
    who, method, url, body = {
        "member_box_off": (
            "dora",
            "POST",
            "/api/v1/conversations",
            {"member_ids": [world.id("carl")]},
        ),
        "recipient_box_off": (
            "carl",
            "POST",
            "/api/v1/conversations",
            {"member_ids": [world.id("dora")]},
        ),
        "blank": ("carl", "POST", f"/api/v1/conversations/{conv}/messages", {"text": " \n "}),
        "too_long": (
            "carl",
            "POST",
            f"/api/v1/conversations/{conv}/messages",
            {"text": "x" * 5001},
        ),
        "other_practice": ("carl", "POST", f"/api/v1/conversations/{theirs}/messages", {}),
        "client_off": ("carl", "POST", "/api/v1/conversations", {"client_id": world.id("casey")}),
    }[attempt]
    body = {"text": "Hello", "idempotency_key": uuid.uuid4().hex, **body}
    client = world.api(who)
    before = audit_state(world)
    r = client.request(method, url, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert audit_state(world) == before


def test_rc1_audit_rows_roll_back_with_their_transaction(world: World, monkeypatch):
    """The audit rows are written in the transaction of the change: when that
    transaction fails at commit, neither the message nor its audit rows remain."""
    conv = start(world, "carl", client="alex").conversation.id
    carl = world.api("carl")
    before = audit_state(world)

    def failing_commit(self: UnitOfWork) -> None:
        self.audit.flush()  # the audit rows are in the transaction now …
        raise RuntimeError("the disk is full")  # … and the commit never happens

    monkeypatch.setattr(UnitOfWork, "commit", failing_commit)
    r = carl.post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": "Lost", "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 500
    monkeypatch.undo()
    assert audit_state(world) == before
    with world.runtime.db.engine.connect() as conn:
        n = conn.execute(
            select(func.count()).select_from(MessageRow).where(MessageRow.conversation_id == conv)
        ).scalar_one()
    assert n == 1


def test_rc1_recorded_but_uncommitted_audit_rows_are_not_kept(world: World):
    before = audit_state(world)
    with unit_of_work(world.runtime.db) as uow:
        uow.audit.record(world.actor("carl"), "test.event", "practice", world.practice_a)
        uow.audit.flush()
        assert (
            uow.conn.execute(
                select(func.count()).select_from(AuditRow).where(AuditRow.action == "test.event")
            ).scalar_one()
            >= 1
        )
        # leaving without commit
    assert audit_state(world) == before


# --- verifying the chain ------------------------------------------------------------------


def mine(problems: list[AuditProblem], world: World) -> list[AuditProblem]:
    return [p for p in problems if p.chain_id == world.practice_a]


def test_rc1_untouched_log_verifies(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    world.api("alex").get(f"/api/v1/conversations/{conv}")
    with world.runtime.db.engine.connect() as conn:
        report = verify_chains(conn, world.runtime.db.keys)
    assert report.ok, report.problems[:10]
    assert report.rows >= len(audit_rows(world, world.practice_a)) > 10
    assert report.chains >= 2


@contextmanager
def scratch(world: World) -> Iterator[Connection]:
    """A transaction to tamper in, rolled back at the end: our copy of the database."""
    with world.runtime.db.engine.connect() as conn:
        conn.begin()
        try:
            yield conn
        finally:
            conn.rollback()


def verify(conn: Connection, world: World) -> list[AuditProblem]:
    return verify_chains(conn, world.runtime.db.keys).problems


@pytest.fixture(scope="module")
def busy(shared_world: World) -> World:
    """Practice A with a chain of a few dozen real events. Shared by the tamper tests,
    which roll their tampering back."""
    world = shared_world
    conv = start(world, "carl", client="alex").conversation.id
    for i in range(5):
        world.api("carl").post(
            f"/api/v1/conversations/{conv}/messages",
            json={"text": f"m{i}", "idempotency_key": f"busy-{i}"},
        )
        world.api("alex").get(f"/api/v1/conversations/{conv}")
    return world


def chain_rows(conn: Connection, chain: int) -> list[Any]:
    return list(
        conn.execute(
            select(AuditRow.__table__).where(AuditRow.chain_id == chain).order_by(AuditRow.seq)
        )
    )


def _set(conn: Connection, chain: int, where_seq: int, /, **values: Any) -> None:
    conn.execute(
        update(AuditRow)
        .where(AuditRow.chain_id == chain, AuditRow.seq == where_seq)
        .values(**values)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"action": "message.read"},
        {"actor_id": 1},
        {"actor_kind": "system"},
        {"target_id": 999_999},
        {"meta": "{}"},
        {"ip": "10.0.0.1"},
        {"via": "cli"},
        {"authenticated_entity": "someone"},
        {"at_shift": True},
        {"prev_hash": GENESIS},
        {"hash": "f" * 64},
    ],
    ids=lambda c: next(iter(c)),
)
def test_rc1_a_changed_row_is_flagged(busy: World, change: dict[str, Any]):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        k = len(rows) // 2
        row = rows[k - 1]
        assert row.seq == k
        if "at_shift" in change:
            change = {"at": row.at + timedelta(seconds=1)}
        _set(conn, pa, k, **change)
        problems = mine(verify(conn, busy), busy)
    flagged = {(p.seq, p.row_id) for p in problems}
    assert (k, row.id) in flagged, problems
    if "hash" in change:  # the next row no longer follows it
        assert {p.seq for p in problems} == {k, k + 1}, problems
    elif "prev_hash" in change:
        assert {p.seq for p in problems} == {k}
        assert any("chain broken" in p.problem for p in problems)
    else:
        assert [(p.seq, p.problem.split(":")[0]) for p in problems] == [(k, "content changed")]


def test_rc1_a_changed_row_with_a_recomputed_plain_hash_is_flagged(busy: World):
    """Without the key (it derives from the master key, outside the database), an
    attacker cannot make a changed row's hash match again."""
    import hashlib

    pa = busy.practice_a
    with scratch(busy) as conn:
        row = chain_rows(conn, pa)[3]
        forged = hashlib.sha256((row.prev_hash + "message.read").encode()).hexdigest()
        _set(conn, pa, row.seq, action="message.read", hash=forged)
        _set(conn, pa, row.seq + 1, prev_hash=forged)  # and relink the next row
        problems = mine(verify(conn, busy), busy)
    # the relinked next row fails too: its MAC covers the previous hash
    assert [(p.seq, p.problem.split(":")[0]) for p in problems] == [
        (row.seq, "content changed"),
        (row.seq + 1, "content changed"),
    ]


def test_rc1_a_deleted_middle_row_is_flagged_at_the_gap(busy: World):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        k = len(rows) // 2
        conn.execute(delete(AuditRow).where(AuditRow.chain_id == pa, AuditRow.seq == k))
        problems = mine(verify(conn, busy), busy)
    follower = rows[k]  # seq k + 1
    assert {(p.seq, p.row_id) for p in problems} == {(k + 1, follower.id)}, problems
    kinds = sorted(p.problem.split(":")[0] for p in problems)
    assert kinds == ["chain broken", "sequence gap"]


def test_rc1_a_deleted_middle_row_with_renumbered_tail_is_flagged(busy: World):
    """A careful attacker closes the gap: every renumbered row then fails its hash."""
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        k = len(rows) // 2
        conn.execute(delete(AuditRow).where(AuditRow.chain_id == pa, AuditRow.seq == k))
        for r in rows[k:]:
            _set(conn, pa, r.seq, seq=r.seq - 1)
        conn.execute(
            update(AuditHeadRow).where(AuditHeadRow.chain_id == pa).values(seq=len(rows) - 1)
        )
        problems = mine(verify(conn, busy), busy)
    assert min(p.seq for p in problems if p.seq is not None) == k
    assert any(p.seq == k and "chain broken" in p.problem for p in problems)


def test_rc1_a_forged_row_inserted_in_the_middle_is_flagged(busy: World):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        k = len(rows) // 2
        for r in reversed(rows[k:]):  # make room after row k
            _set(conn, pa, r.seq, seq=r.seq + 1)
        forged = {c: getattr(rows[k - 1], c) for c in AUDIT_COLUMNS if c != "id"}
        forged.update(
            seq=k + 1,
            action="practice.settings_changed",
            prev_hash=rows[k - 1].hash,
            hash=secrets.token_hex(32),
        )
        forged_id = conn.execute(
            insert(AuditRow).values(**forged).returning(AuditRow.id)
        ).scalar_one()
        problems = mine(verify(conn, busy), busy)
    first = min((p for p in problems if p.seq is not None), key=lambda p: p.seq)
    assert (first.seq, first.row_id) == (k + 1, forged_id)
    assert "content changed" in first.problem
    assert not [p for p in problems if p.seq is not None and p.seq <= k]
    assert any(p.row_id is None and "tail" in p.problem for p in problems)  # head is behind


@pytest.mark.parametrize("move_head", [False, True])
def test_rc1_a_forged_row_appended_at_the_end_is_flagged(busy: World, move_head: bool):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        last = rows[-1]
        forged = {c: getattr(last, c) for c in AUDIT_COLUMNS if c != "id"}
        forged.update(seq=last.seq + 1, prev_hash=last.hash, hash=secrets.token_hex(32))
        forged_id = conn.execute(
            insert(AuditRow).values(**forged).returning(AuditRow.id)
        ).scalar_one()
        if move_head:
            conn.execute(
                update(AuditHeadRow)
                .where(AuditHeadRow.chain_id == pa)
                .values(seq=forged["seq"], hash=forged["hash"])
            )
        problems = mine(verify(conn, busy), busy)
    assert (last.seq + 1, forged_id) in {(p.seq, p.row_id) for p in problems}, problems
    assert not [p for p in problems if p.row_id is not None and p.seq <= last.seq]
    if not move_head:  # the head still names the old last row
        assert any(p.row_id is None and "tail" in p.problem for p in problems)


def test_rc1_a_row_copied_from_another_chain_is_flagged(busy: World):
    """A genuine row of practice B replayed into practice A's chain."""
    pa, pb = busy.practice_a, busy.practice_b
    with scratch(busy) as conn:
        last = chain_rows(conn, pa)[-1]
        theirs = chain_rows(conn, pb)[-1]
        copied = {c: getattr(theirs, c) for c in AUDIT_COLUMNS if c != "id"}
        copied.update(chain_id=pa, seq=last.seq + 1, prev_hash=last.hash)
        conn.execute(
            update(AuditHeadRow)
            .where(AuditHeadRow.chain_id == pa)
            .values(seq=last.seq + 1, hash=theirs.hash)
        )
        conn.execute(insert(AuditRow).values(**copied))
        problems = mine(verify(conn, busy), busy)
    # The copied row fails its MAC here, and the head moved to it cannot carry a valid MAC.
    assert sorted((p.seq, p.problem.split(":")[0]) for p in problems) == [
        (last.seq + 1, "chain head forged"),
        (last.seq + 1, "content changed"),
    ]


def test_rc1_two_rows_with_swapped_seq_are_flagged(busy: World):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        k = len(rows) // 2
        a, b = rows[k - 1], rows[k]  # seq k and k + 1
        conn.execute(update(AuditRow).where(AuditRow.id == a.id).values(seq=-1))
        conn.execute(update(AuditRow).where(AuditRow.id == b.id).values(seq=k))
        conn.execute(update(AuditRow).where(AuditRow.id == a.id).values(seq=k + 1))
        problems = mine(verify(conn, busy), busy)
    flagged = {(p.seq, p.row_id) for p in problems}
    assert {(k, b.id), (k + 1, a.id)} <= flagged, problems
    assert {p.seq for p in problems} <= {k, k + 1, k + 2}


def test_rc1_a_deleted_last_row_is_flagged_by_the_head(busy: World):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        conn.execute(delete(AuditRow).where(AuditRow.id == rows[-1].id))
        problems = mine(verify(conn, busy), busy)
    assert len(problems) == 1, problems
    (p,) = problems
    assert (p.seq, p.row_id) == (rows[-1].seq, None)
    assert "tail" in p.problem and "removed from the end" in p.problem


def test_rc1_a_deleted_head_row_is_flagged(busy: World):
    pa = busy.practice_a
    with scratch(busy) as conn:
        conn.execute(delete(AuditHeadRow).where(AuditHeadRow.chain_id == pa))
        problems = mine(verify(conn, busy), busy)
    assert sorted(p.problem.split(" (")[0] for p in problems) == [
        "chain without a head row",
        "practice without an audit chain",
    ]


@pytest.mark.parametrize("cut", ["last_row_and_head", "last_three_rows_and_head", "whole_chain"])
def test_rc1_tail_truncation_with_a_rewritten_head_is_flagged(busy: World, cut: str):
    pa = busy.practice_a
    with scratch(busy) as conn:
        rows = chain_rows(conn, pa)
        if cut == "whole_chain":
            conn.execute(delete(AuditRow).where(AuditRow.chain_id == pa))
            conn.execute(delete(AuditHeadRow).where(AuditHeadRow.chain_id == pa))
        else:
            n = 1 if cut == "last_row_and_head" else 3
            keep = rows[-n - 1]
            conn.execute(delete(AuditRow).where(AuditRow.id.in_([r.id for r in rows[-n:]])))
            conn.execute(
                update(AuditHeadRow)
                .where(AuditHeadRow.chain_id == pa)
                .values(seq=keep.seq, hash=keep.hash)
            )
        problems = mine(verify(conn, busy), busy)
    assert problems


# --- randomized tampering -----------------------------------------------------------------

ACTIONS = ["message.sent", "conversation.opened", "message.removed", "client.viewed"]


def _build_log(world: World, n: int, rng: random.Random) -> None:
    carl = Actor(world.practice_a, Party.member(world.id("carl")), Via.API_TOKEN, "10.1.2.3")
    alex = Actor(world.practice_a, Party(PartyKind.CLIENT, world.id("alex")), Via.MAGIC_LINK)
    done = 0
    while done < n:  # several transactions, so the chain crosses commits
        batch = min(n - done, rng.randint(200, 700))
        with unit_of_work(world.runtime.db) as uow:
            for _ in range(batch):
                uow.audit.record(
                    rng.choice([carl, alex]),
                    rng.choice(ACTIONS),
                    "message",
                    rng.randint(1, 10**6),
                    conversation_id=rng.randint(1, 100),
                    seq=rng.randint(1, 500),
                )
            uow.commit()
        done += batch


def _forge(template: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    forged = dict(template)
    forged.update(action="member.added", target_id=424242, prev_hash=prev_hash)
    forged["hash"] = secrets.token_hex(32)
    return forged


def _change(row: dict[str, Any], rng: random.Random) -> None:
    field = rng.choice(["action", "actor_id", "target_id", "meta", "ip", "at", "via"])
    if field == "action":
        row["action"] = "message.read" if row["action"] != "message.read" else "message.sent"
    elif field in ("actor_id", "target_id"):
        row[field] = row[field] + 1
    elif field == "meta":
        row["meta"] = row["meta"].replace("}", ',"x":1}')
    elif field == "ip":
        row["ip"] = "192.0.2.77"
    elif field == "at":
        row["at"] = row["at"] - timedelta(minutes=5)
    else:
        row["via"] = "cli" if row["via"] != "cli" else "internal"


def test_rc1_randomized_tampering_is_always_found(world: World):
    """About 2,000 rows; 100 tamperings (change, delete, insert, reorder) at random places
    in a copy: every tampered place is reported, and nothing before the first forged
    insertion is reported that was not tampered with. The untouched log reports nothing."""
    rng = random.Random(20261127)
    pa = world.practice_a
    _build_log(world, 2000, rng)
    with scratch(world) as conn:
        untouched = verify(conn, world)
        assert untouched == [], untouched[:5]
        model = [dict(r._mapping) for r in chain_rows(conn, pa)]
        n = len(model)
        assert n >= 2000
        for i, row in enumerate(model):
            row["tag"] = i
        # 100 places, at least 3 rows apart, never the very first or last rows
        slots = rng.sample(range(1, (n - 5) // 3), 100)
        positions = sorted((s * 3 for s in slots), reverse=True)  # tamper back to front
        ops = ["change"] * 35 + ["delete"] * 25 + ["reorder"] * 25 + ["insert"] * 15
        rng.shuffle(ops)
        # insertions shift every later seq (all of which then fail), so keep them late
        late = sorted(positions)[-len([o for o in ops if o == "insert"]) :]
        early = [p for p in positions if p not in late]
        plan = [(p, "insert") for p in late] + list(
            zip(early, [o for o in ops if o != "insert"], strict=True)
        )
        plan.sort(reverse=True)
        flagged_tags: list[tuple[str, int]] = []  # (op, tag of the row to be reported)
        neighbours: set[int] = set()  # tags whose report is explained by a nearby tampering
        for pos, op in plan:
            if op == "change":
                _change(model[pos], rng)
                flagged_tags.append((op, model[pos]["tag"]))
                neighbours.add(model[pos]["tag"])
            elif op == "delete":
                del model[pos]
                flagged_tags.append((op, model[pos]["tag"]))  # the row after the gap
                neighbours.add(model[pos]["tag"])
            elif op == "reorder":
                a, b = model[pos], model[pos + 1]
                a["seq"], b["seq"] = b["seq"], a["seq"]
                model[pos], model[pos + 1] = b, a
                flagged_tags += [(op, a["tag"]), (op, b["tag"])]
                neighbours |= {a["tag"], b["tag"], model[pos + 2]["tag"]}
            else:  # insert a forged row after pos, shifting the rest up by one
                forged = _forge(model[pos], model[pos]["hash"])
                forged["tag"] = -pos
                forged["seq"] = model[pos]["seq"] + 1
                for later in model[pos + 1 :]:
                    later["seq"] += 1
                model.insert(pos + 1, forged)
                flagged_tags.append((op, forged["tag"]))
        conn.execute(delete(AuditRow).where(AuditRow.chain_id == pa))
        conn.execute(
            insert(AuditRow),
            [{k: v for k, v in r.items() if k not in ("id", "tag")} for r in model],
        )
        problems = mine(verify(conn, world), world)
    seq_of = {r["tag"]: r["seq"] for r in model}
    reported = {p.seq for p in problems}
    missed = [(op, seq_of[tag]) for op, tag in flagged_tags if seq_of[tag] not in reported]
    assert not missed, f"tamperings not reported: {missed}"
    first_insert = min(seq_of[tag] for op, tag in flagged_tags if op == "insert")
    explained = {seq_of[t] for t in neighbours}
    unexplained = sorted(
        p.seq
        for p in problems
        if p.seq is not None and p.seq < first_insert and p.seq not in explained
    )
    assert not unexplained, f"reported where nothing was tampered with: {unexplained[:10]}"
    assert len(flagged_tags) >= 100
    # and after the rollback, the real log is intact again
    with world.runtime.db.engine.connect() as conn:
        assert mine(verify(conn, world), world) == []


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_world(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    if ON_POSTGRES:
        pytest.skip("the CLI test tampers with a SQLite file of its own")
    runtime = build_runtime(make_settings(tmp_path))
    world = build_world(runtime)
    conv = start(world, "carl", client="alex", text=canary()).conversation.id
    world.api("alex").get(f"/api/v1/conversations/{conv}")
    runtime.close()
    yield world, tmp_path
    runtime.close()


def run_cli(data_dir: Path, master_key: str = TEST_MASTER_KEY) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env.update(
        CONFIDE_MASTER_KEY=master_key,
        CONFIDE_DEMO="true",
        CONFIDE_FAST_PASSWORD_HASHING="true",  # the CLI's hasher is built but unused here
        COLUMNS="250",
        NO_COLOR="1",
        TYPER_STANDARD_TRACEBACK="1",  # a crash prints a plain traceback: quicker
    )
    exe = Path(sys.prefix) / "bin" / "confide"
    return subprocess.run(
        [str(exe), "audit", "verify", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rc1_cli_audit_verify_exit_codes(cli_world: tuple[World, Path]):
    """`confide audit verify`: exit 0 on an intact log; exit 1 after a row was changed in
    one chain and the last row cut off another, each problem listed with its place."""
    world, data_dir = cli_world
    pa, pb = world.practice_a, world.practice_b
    intact = run_cli(data_dir)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "Audit log intact" in intact.stdout

    db = sqlite3.connect(data_dir / "confide.db")
    try:
        (seq,) = db.execute(
            "SELECT seq FROM audit_log WHERE chain_id = ? ORDER BY seq LIMIT 1 OFFSET 5", (pa,)
        ).fetchone()
        db.execute(
            "UPDATE audit_log SET action = 'message.read' WHERE chain_id = ? AND seq = ?", (pa, seq)
        )
        (last_id, last_seq) = db.execute(
            "SELECT id, seq FROM audit_log WHERE chain_id = ? ORDER BY seq DESC LIMIT 1", (pb,)
        ).fetchone()
        db.execute("DELETE FROM audit_log WHERE id = ?", (last_id,))
        db.commit()
    finally:
        db.close()
    tampered = run_cli(data_dir)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    lines = tampered.stdout.splitlines()
    assert any(f"chain {pa} seq {seq} " in line and "content changed" in line for line in lines)
    assert any(
        f"chain {pb} seq {last_seq} " in line and "removed from the end" in line for line in lines
    ), tampered.stdout
    assert "2 problems" in tampered.stdout


def test_rc1_verify_with_the_wrong_master_key_flags_every_row(world: World):
    from confide.store.crypto import KeyRing, new_master_key_text
    from confide.store.crypto import decode_master_key as decode

    wrong = KeyRing(decode(new_master_key_text()))
    with world.runtime.db.engine.connect() as conn:
        problems = [
            p for p in verify_chains(conn, wrong).problems if p.chain_id == world.practice_a
        ]
    rows = audit_rows(world, world.practice_a)
    assert {p.seq for p in problems if "content changed" in p.problem} == {r["seq"] for r in rows}


def test_rc1_cli_audit_verify_on_a_missing_database_is_a_clear_error(tmp_path: Path):
    if ON_POSTGRES:
        pytest.skip("SQLite data directory")
    result = run_cli(tmp_path / "typo")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "typo" / "confide.db").exists()
