"""Concurrent senders: gapless per-conversation order and exactly-once by key (MS5),
through the real services and database (SQLite's single writer, PostgreSQL row locks)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from confide.services import messaging
from confide.store.tables import MessageRow
from confide.store.uow import unit_of_work
from tests.personas import World, start


def _send(world: World, who: str, conv: int, text: str, key: str) -> messaging.Sent:
    with unit_of_work(world.runtime.db) as uow:
        return messaging.send_message(uow, world.actor(who), messaging.SendMessage(conv, text, key))


def test_ms5_concurrent_sends_with_one_key_store_one_message(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    barrier = threading.Barrier(8)

    def go(_i: int) -> int:
        barrier.wait()
        return _send(world, "alex", conv, "only once", "same-key").message.id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(go, range(8)))
    assert len(ids) == 1
    with world.runtime.db.engine.connect() as conn:
        rows = conn.execute(
            select(MessageRow.id).where(
                MessageRow.conversation_id == conv,
                MessageRow.sender_id == world.id("alex"),
                MessageRow.sender_kind == "client",
            )
        ).all()
    assert len(rows) == 1


def test_ms1_concurrent_senders_get_gapless_ordered_sequence_numbers(world: World):
    conv = start(world, "alex", members=("carl", "bill", "sally")).conversation.id
    senders = ["alex", "carl", "bill", "sally"]

    def go(i: int) -> tuple[str, int]:
        who = senders[i % 4]
        sent = _send(world, who, conv, f"{who} {i}", f"key-{i}")
        return who, sent.message.seq

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(go, range(80)))
    seqs = sorted(seq for _, seq in results)
    assert seqs == list(range(2, 82))  # seq 1 is the opening message
    with world.runtime.db.engine.connect() as conn:
        stored = [
            s
            for (s,) in conn.execute(
                select(MessageRow.seq)
                .where(MessageRow.conversation_id == conv)
                .order_by(MessageRow.seq)
            )
        ]
    assert stored == list(range(1, 82))
