"""RC2: message text is encrypted at rest; the database alone does not reveal it.

- The raw bytes of the SQLite database (and its WAL) never hold a message's text.
- A body opens only with its own practice's data key, only in its own row (the
  associated data binds practice, conversation and sequence number).
- A practice's data key opens only with the right master key, for that practice.
"""

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from confide.runtime import Runtime, build_runtime
from confide.store.crypto import (
    NONCE_BYTES,
    CorruptCiphertext,
    KeyRing,
    decode_master_key,
    message_aad,
)
from confide.store.tables import MessageRow, PracticeKeyRow
from confide.store.uow import unit_of_work
from tests.conftest import TEST_MASTER_KEY, make_settings
from tests.personas import World, build_world, start

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4()}"


def send(world: World, who: str, conv: int, body: str) -> dict:
    r = world.api(who).post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": body, "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    return r.json()["message"]


def message_row(world: World, message_id: int):
    with world.runtime.db.engine.connect() as conn:
        return conn.execute(select(MessageRow.__table__).where(MessageRow.id == message_id)).one()


def wrapped_key(world: World, practice_id: int) -> bytes:
    with world.runtime.db.engine.connect() as conn:
        return conn.execute(
            select(PracticeKeyRow.wrapped_key).where(PracticeKeyRow.practice_id == practice_id)
        ).scalar_one()


def fresh_ring(world: World, *practice_ids: int) -> KeyRing:
    """A key ring as a second process would build it: master key, then the wrapped
    data keys read from the database."""
    ring = KeyRing(decode_master_key(TEST_MASTER_KEY))
    for pid in practice_ids:
        ring.install(pid, wrapped_key(world, pid))
    return ring


# --- the raw database file (SQLite) -------------------------------------------------------


@pytest.fixture
def own_runtime(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose SQLite file belongs to this test alone."""
    if ON_POSTGRES:
        pytest.skip("scans the SQLite file; PostgreSQL keeps its files elsewhere")
    rt = build_runtime(make_settings(tmp_path))
    yield rt
    rt.close()


def database_bytes(data_dir: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in data_dir.glob("confide.db*") if p.is_file()}
    assert "confide.db" in files, sorted(p.name for p in data_dir.iterdir())
    return files


def assert_absent(files: dict[str, bytes], needles: list[str]) -> None:
    for needle in needles:
        for form in {needle.encode(), needle.lower().encode(), needle.upper().encode()}:
            for name, data in files.items():
                assert form not in data, f"{needle!r} found in plain text in {name}"


def test_rc2_message_text_never_appears_in_the_sqlite_file_or_its_wal(own_runtime: Runtime):
    world = build_world(own_runtime)
    data_dir = own_runtime.settings.data_dir
    markers = [canary() for _ in range(6)]
    sent = start(world, "carl", client="alex", text=f"First {markers[0]} :grin:")
    conv = sent.conversation.id
    send(world, "alex", conv, f"Reply {markers[1]}")
    send(world, "carl", conv, markers[2] * 40)  # long, repetitive: still nothing
    removed = send(world, "carl", conv, f"Oops {markers[3]}")
    r = world.api("carl").delete(f"/api/v1/conversations/{conv}/messages/{removed['id']}")
    assert r.status_code == 200, r.text
    team = world.api("bill").post(
        "/api/v1/conversations",
        json={
            "member_ids": [world.id("sally")],
            "text": f"Team {markers[4]}",
            "idempotency_key": uuid.uuid4().hex,
        },
    )
    assert team.status_code == 201, team.text
    # the same text twice: two different ciphertexts (random nonces)
    a = send(world, "carl", conv, markers[5])
    b = send(world, "carl", conv, markers[5])
    assert message_row(world, a["id"]).body != message_row(world, b["id"]).body
    # everyone can read it back through the API (the control: the text is stored)
    page = world.api("alex").get(f"/api/v1/conversations/{conv}").json()
    texts = " ".join(m["text"] or "" for m in page["messages"])
    assert markers[1] in texts and markers[5] in texts and markers[3] not in texts

    files = database_bytes(data_dir)
    assert "confide.db-wal" in files  # WAL mode: fresh writes sit in the WAL first
    assert_absent(files, markers)
    # … and after a checkpoint moved everything into the main file
    with own_runtime.db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert_absent(database_bytes(data_dir), markers)
    # the control for the scan itself: an unencrypted column does show up
    assert world.emails["carl"].encode() in b"".join(database_bytes(data_dir).values())


def test_rc2_no_key_material_is_stored_in_the_database(own_runtime: Runtime):
    world = build_world(own_runtime)
    start(world, "carl", client="alex", text=canary())
    own_runtime.close()
    files = database_bytes(own_runtime.settings.data_dir)
    master = decode_master_key(TEST_MASTER_KEY)
    needles = [master, TEST_MASTER_KEY.encode(), base64.b64encode(master)]
    # the practice's raw data key, unwrapped here with the master key
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    wrapped = wrapped_key(world, world.practice_a)
    raw_key = AESGCM(master).decrypt(
        wrapped[:NONCE_BYTES],
        wrapped[NONCE_BYTES:],
        f"confide:data-key:{world.practice_a}".encode(),
    )
    needles += [raw_key, base64.b64encode(raw_key), raw_key.hex().encode()]
    for needle in needles:
        for name, data in files.items():
            assert needle not in data, f"key material found in {name}"
    assert not (own_runtime.settings.data_dir / "master.key").exists()  # it came from settings


# --- the body column, on either database ---------------------------------------------------


def test_rc2_body_column_is_ciphertext_that_opens_only_with_its_own_key(world: World):
    marker = canary()
    sent = start(world, "carl", client="alex", text=marker)
    row = message_row(world, sent.message.id)
    assert isinstance(row.body, bytes)
    assert marker.encode() not in row.body
    assert len(row.body) == NONCE_BYTES + len(marker.encode()) + 16  # nonce, text, GCM tag
    aad = message_aad(row.practice_id, row.conversation_id, row.seq)
    ring = fresh_ring(world, world.practice_a, world.practice_b)
    assert ring.decrypt(world.practice_a, row.body, aad) == marker  # the control
    with pytest.raises(CorruptCiphertext):
        ring.decrypt(world.practice_b, row.body, aad)  # the other practice's key
    with pytest.raises(CorruptCiphertext):  # … even claiming to be the other practice
        ring.decrypt(
            world.practice_b,
            row.body,
            message_aad(world.practice_b, row.conversation_id, row.seq),
        )


@pytest.mark.parametrize(
    "aad_change",
    ["other_practice", "other_conversation", "other_seq", "empty"],
)
def test_rc2_associated_data_binds_practice_conversation_and_seq(world: World, aad_change: str):
    sent = start(world, "carl", client="alex", text=canary())
    row = message_row(world, sent.message.id)
    ring = fresh_ring(world, world.practice_a)
    wrong = {
        "other_practice": message_aad(world.practice_b, row.conversation_id, row.seq),
        "other_conversation": message_aad(row.practice_id, row.conversation_id + 1, row.seq),
        "other_seq": message_aad(row.practice_id, row.conversation_id, row.seq + 1),
        "empty": b"",
    }[aad_change]
    with pytest.raises(CorruptCiphertext):
        ring.decrypt(world.practice_a, row.body, wrong)


@pytest.mark.parametrize("where", [0, NONCE_BYTES, -1])
def test_rc2_a_flipped_bit_in_a_body_is_detected(world: World, where: int):
    sent = start(world, "carl", client="alex", text=canary())
    row = message_row(world, sent.message.id)
    body = bytearray(row.body)
    body[where] ^= 0x01
    ring = fresh_ring(world, world.practice_a)
    with pytest.raises(CorruptCiphertext):
        ring.decrypt(
            world.practice_a,
            bytes(body),
            message_aad(row.practice_id, row.conversation_id, row.seq),
        )


def test_rc2_wrong_master_key_cannot_open_a_data_key(world: World):
    wrapped = wrapped_key(world, world.practice_a)
    KeyRing(decode_master_key(TEST_MASTER_KEY)).install(world.practice_a, wrapped)  # control
    other_master = bytes(b ^ 0x5A for b in decode_master_key(TEST_MASTER_KEY))
    with pytest.raises(CorruptCiphertext):
        KeyRing(other_master).install(world.practice_a, wrapped)
    with pytest.raises(CorruptCiphertext):  # a wrapped key cannot be moved to another practice
        KeyRing(decode_master_key(TEST_MASTER_KEY)).install(world.practice_b, wrapped)
    truncated = wrapped[:-1]
    with pytest.raises(CorruptCiphertext):
        KeyRing(decode_master_key(TEST_MASTER_KEY)).install(world.practice_a, truncated)


def test_rc2_a_runtime_with_the_wrong_master_key_cannot_read_messages(world: World, tmp_path: Path):
    """A second process started with another master key over the same database: the
    practice's data key does not open, so no text comes out."""
    from confide.store.crypto import new_master_key_text

    sent = start(world, "carl", client="alex", text=canary())
    settings = world.runtime.settings
    other = build_runtime(
        make_settings(
            settings.data_dir if not ON_POSTGRES else tmp_path,
            master_key=new_master_key_text(),
        ),
        run_migrations=False,
    )
    try:
        with unit_of_work(other.db, write=False) as uow, pytest.raises(CorruptCiphertext):
            uow.conversations.get_message(world.practice_a, sent.conversation.id, sent.message.id)
        # (the data key itself does not open: nothing is decrypted at all)
    finally:
        other.close()


# --- a body copied into another row --------------------------------------------------------


def _copy_body(world: World, source_id: int, target_id: int) -> bytes:
    """Overwrite one row's body with another's; returns the overwritten body."""
    with world.runtime.db.engine.begin() as conn:
        old = conn.execute(select(MessageRow.body).where(MessageRow.id == target_id)).scalar_one()
        body = conn.execute(select(MessageRow.body).where(MessageRow.id == source_id)).scalar_one()
        conn.execute(update(MessageRow).where(MessageRow.id == target_id).values(body=body))
    return old


def _restore_body(world: World, message_id: int, body: bytes) -> None:
    """Leave the shared database as we found it: no damaged row for later tests."""
    with world.runtime.db.engine.begin() as conn:
        conn.execute(update(MessageRow).where(MessageRow.id == message_id).values(body=body))


@pytest.fixture
def tampered(world: World) -> Iterator[tuple[World, int, dict, dict, str, str]]:
    """A conversation whose second message's body was overwritten with the first's."""
    first, second = canary(), canary()
    sent = start(world, "carl", client="alex", text=first)
    conv = sent.conversation.id
    victim = send(world, "carl", conv, second)
    ok = send(world, "alex", conv, "A later message")
    original = _copy_body(world, sent.message.id, victim["id"])
    yield world, conv, victim, ok, first, second
    _restore_body(world, victim["id"], original)
    with unit_of_work(world.runtime.db, write=False) as uow:  # the control: intact again
        texts = {
            m.id: m.text
            for m in uow.conversations.list_messages(
                world.practice_a, conv, before_seq=None, limit=10, reveal_removed=True
            )
        }
    assert texts[victim["id"]] == second


def test_rc2_a_body_copied_to_another_row_does_not_decrypt(tampered):
    world, conv, victim, _ok, first, _second = tampered
    with unit_of_work(world.runtime.db, write=False) as uow:
        damaged = uow.conversations.get_message(world.practice_a, conv, victim["id"])
    assert damaged.unreadable and damaged.text is None  # never the first message's text
    ring = fresh_ring(world, world.practice_a)
    row = message_row(world, victim["id"])
    with pytest.raises(CorruptCiphertext):
        ring.decrypt(world.practice_a, row.body, message_aad(row.practice_id, conv, row.seq))
    # the bytes are the first message's, which open only at the first message's place
    assert ring.decrypt(world.practice_a, row.body, message_aad(row.practice_id, conv, 1)) == first


def test_rc2_a_body_copied_across_practices_does_not_decrypt(world: World):
    theirs = start(world, "bea", client="zoe", text=canary())
    mine = start(world, "carl", client="alex", text=canary())
    original = _copy_body(world, theirs.message.id, mine.message.id)
    try:
        with unit_of_work(world.runtime.db, write=False) as uow:
            damaged = uow.conversations.get_message(
                world.practice_a, mine.conversation.id, mine.message.id
            )
        assert damaged.unreadable and damaged.text is None
    finally:
        _restore_body(world, mine.message.id, original)


@pytest.mark.parametrize("who", ["carl", "alex"])
def test_rc2_a_copied_body_never_shows_the_wrong_text(tampered, who: str):
    """Whatever the API answers for a damaged row, it never shows another message's
    text in its place, and never a traceback."""
    world, conv, _victim, _ok, first, second = tampered
    r = world.api(who).get(f"/api/v1/conversations/{conv}")
    assert r.text.count(first) <= 1  # the first message itself, at most once
    assert "Traceback" not in r.text and "CorruptCiphertext" not in r.text
    if r.status_code == 200:
        by_id = {m["id"]: m["text"] for m in r.json()["messages"]}
        assert by_id[_victim["id"]] in (None, second)


@pytest.mark.parametrize("who", ["carl", "alex"])
def test_rc2_a_damaged_row_is_withheld_and_the_conversation_still_opens(tampered, who: str):
    world, conv, victim, ok, first, _second = tampered
    r = world.api(who).get(f"/api/v1/conversations/{conv}")
    assert r.status_code == 200, r.text
    by_id = {m["id"]: m["text"] for m in r.json()["messages"]}
    assert by_id[victim["id"]] is None
    assert [m["id"] for m in r.json()["messages"] if m["unreadable"]] == [victim["id"]]
    assert by_id[ok["id"]] == "A later message"
    assert first in by_id.values()


def test_rc2_a_damaged_row_is_not_a_500_when_removed(tampered):
    world, conv, victim, _ok, _first, _second = tampered
    r = world.api("carl").delete(f"/api/v1/conversations/{conv}/messages/{victim['id']}")
    assert r.status_code < 500, r.text


def test_rc2_the_list_and_unread_count_do_not_decrypt(tampered):
    """Views that show no text keep working with a damaged row."""
    world, _conv, _victim, _ok, _first, _second = tampered
    assert world.api("carl").get("/api/v1/conversations").status_code == 200
    assert world.api("carl").get("/api/v1/unread").status_code == 200


def test_rc2_the_body_column_type_holds_no_text(world: World):
    """Belt and braces: a SQL LIKE over the body column finds no message text."""
    marker = canary()
    start(world, "carl", client="alex", text=marker)
    with world.runtime.db.engine.connect() as conn:
        if world.runtime.db.is_sqlite:
            q = text("SELECT count(*) FROM messages WHERE CAST(body AS TEXT) LIKE :m")
        else:
            q = text("SELECT count(*) FROM messages WHERE encode(body, 'escape') LIKE :m")
        assert conn.execute(q, {"m": f"%{marker}%"}).scalar_one() == 0
