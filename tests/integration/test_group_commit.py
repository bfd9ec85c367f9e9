"""Group commit (store/group.py): commands share a transaction, each in its own savepoint.

What must hold: a refused or failing command leaves nothing behind (no message, audit
row or outbox row) and does not disturb the commands grouped with it; an answer is given
only once its group is committed; the commands really are grouped under load; and when
a group's commit fails, each command runs again alone and gets its own answer.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select, text

from confide.domain.errors import NotFound
from confide.services import messaging
from confide.store.db import database_unavailable
from confide.store.group import GroupCommitter
from confide.store.tables import AuditRow, MessageRow, OutboxRow
from confide.store.uow import UnitOfWork
from tests.personas import World, start


def _counts(world: World, conv: int) -> tuple[int, int, int]:
    with world.runtime.db.engine.connect() as conn:
        messages = conn.execute(
            select(func.count()).select_from(MessageRow).where(MessageRow.conversation_id == conv)
        ).scalar_one()
        audit = conn.execute(
            select(func.count())
            .select_from(AuditRow)
            .where(AuditRow.chain_id == world.practice_a, AuditRow.action == "message.sent")
        ).scalar_one()
        outbox = conn.execute(
            select(func.count())
            .select_from(OutboxRow)
            .where(OutboxRow.practice_id == world.practice_a, OutboxRow.kind == "message.created")
        ).scalar_one()
    return messages, audit, outbox


def _send(world: World, who: str, conv: int, text: str, key: str, *, fail: bool = False):
    actor = world.actor(who)

    def command(uow: UnitOfWork) -> messaging.Sent:
        if fail:
            # A send's writes (message, audit row, outbox row), then a failure before
            # the command commits.
            msg = uow.conversations.append_message(
                actor.practice_id, conv, sender=actor.party, text=text, idempotency_key=key
            )
            assert msg is not None
            uow.audit.record(actor, "message.sent", "message", msg.id, conversation_id=conv)
            uow.outbox.add(actor.practice_id, "message.created", conversation_id=conv)
            raise RuntimeError("failed before commit")
        return messaging.send_message(uow, actor, messaging.SendMessage(conv, text, key))

    return command


def test_ms5_a_failing_command_leaves_nothing_and_spares_its_group(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    before = _counts(world, conv)
    group = GroupCommitter(world.runtime.db)
    barrier = threading.Barrier(24)

    def go(i: int):
        barrier.wait()
        future = group.submit(_send(world, "carl", conv, f"n{i}", f"g-{i}", fail=i % 3 == 0))
        try:
            return future.result(timeout=60).message.seq
        except RuntimeError:
            return None

    try:
        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(go, range(120)))
        # A command refused by the policy (someone else's conversation) is a 404 as ever.
        outsider = group.submit(_send(world, "bea", conv, "not mine", "g-x"))
        with pytest.raises(NotFound):
            outsider.result(timeout=60)
    finally:
        group.close()
    ok = [seq for seq in results if seq is not None]
    assert len(ok) == 80 and results.count(None) == 40
    assert sorted(ok) == list(range(2, 82))  # gapless: the failed ones took no number
    messages, audit, outbox = _counts(world, conv)
    assert (messages, audit, outbox) == (before[0] + 80, before[1] + 80, before[2] + 80)
    assert group.groups < group.commands  # grouped: fewer transactions than commands


def test_an_answer_comes_only_after_its_group_is_committed(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    group = GroupCommitter(world.runtime.db)
    seen: list[int] = []
    try:
        futures = [group.submit(_send(world, "carl", conv, f"c{i}", f"c-{i}")) for i in range(30)]
        for future in futures:
            sent = future.result(timeout=60)
            # Another connection sees it the moment the answer exists.
            with world.runtime.db.engine.connect() as conn:
                seen.append(
                    conn.execute(
                        select(func.count())
                        .select_from(MessageRow)
                        .where(MessageRow.id == sent.message.id)
                    ).scalar_one()
                )
    finally:
        group.close()
    assert seen == [1] * 30


def test_a_failed_group_commit_runs_each_command_alone(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    conv = start(world, "carl", client="alex").conversation.id
    before = _counts(world, conv)
    real_commit = UnitOfWork.commit
    failed = threading.Event()

    def commit_fails_once_for_a_group(self: UnitOfWork) -> None:
        # The group's own commit (not a command's savepoint) fails the first time.
        if not self._item and not failed.is_set() and self.audit.pending > 1:
            failed.set()
            raise OSError("disk full")
        real_commit(self)

    monkeypatch.setattr(UnitOfWork, "commit", commit_fails_once_for_a_group)
    group = GroupCommitter(world.runtime.db)
    hold = threading.Event()

    def wait_then_send(uow: UnitOfWork) -> None:
        hold.wait(10)  # lets the next commands queue up behind it: one group

    try:
        first = group.submit(wait_then_send)
        futures = [group.submit(_send(world, "carl", conv, f"r{i}", f"r-{i}")) for i in range(10)]
        hold.set()
        first.result(timeout=60)
        results = [f.result(timeout=60) for f in futures]
    finally:
        group.close()
    assert failed.is_set()
    assert len({r.message.id for r in results}) == 10
    assert _counts(world, conv) == (before[0] + 10, before[1] + 10, before[2] + 10)


def test_awaiting_requests_get_their_answers_with_one_wake_up_of_the_loop_per_group(
    world: World,
):
    """`GroupCommitter.run` (the send route): each coroutine gets its own answer or
    error, and a group's answers reach the event loop in one call, not one per command."""
    conv = start(world, "carl", client="alex").conversation.id
    before = _counts(world, conv)
    group = GroupCommitter(world.runtime.db)
    hold = threading.Event()

    async def main() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        calls = 0
        real = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        first = loop.create_task(group.run(lambda uow: hold.wait(10)))
        await asyncio.sleep(0.05)  # the writer holds the first command; the rest queue up
        tasks = [
            loop.create_task(
                group.run(_send(world, "carl", conv, f"a{i}", f"a-{i}", fail=i % 4 == 0))
            )
            for i in range(20)
        ]
        await asyncio.sleep(0.05)
        hold.set()
        await first
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, calls

    try:
        results, calls = asyncio.run(main())
    finally:
        group.close()
    errors = [r for r in results if isinstance(r, RuntimeError)]
    sent = [r for r in results if isinstance(r, messaging.Sent)]
    assert len(errors) == 5 and len(sent) == 15
    assert sorted(s.message.seq for s in sent) == list(range(2, 17))
    assert _counts(world, conv) == (before[0] + 15, before[1] + 15, before[2] + 15)
    assert group.groups == 2  # the held command's group, then the other twenty together
    assert calls == group.groups


def test_a_request_given_up_before_its_group_runs_is_not_run(world: World):
    conv = start(world, "carl", client="alex").conversation.id
    before = _counts(world, conv)
    group = GroupCommitter(world.runtime.db)
    hold = threading.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = loop.create_task(group.run(lambda uow: hold.wait(10)))
        await asyncio.sleep(0.05)
        gone = loop.create_task(group.run(_send(world, "carl", conv, "gone", "gone-1")))
        await asyncio.sleep(0.05)
        gone.cancel()  # the client went away while its send waited
        hold.set()
        await first
        kept = await group.run(_send(world, "carl", conv, "kept", "kept-1"))
        assert kept.message.seq == 2

    try:
        asyncio.run(main())
    finally:
        group.close()
    assert _counts(world, conv) == (before[0] + 1, before[1] + 1, before[2] + 1)


def test_a_command_whose_connection_is_ended_gets_an_outage_and_its_group_still_commits(
    world: World,
):
    """T35's failure mode within a group: the server ends the group's connection in the
    middle of one command. That command's answer says "database unavailable" (a 503,
    never a 500 from a dead transaction), and every other command of the group still
    gets its answer, run again alone."""
    if not world.runtime.settings.is_server_database:
        pytest.skip("ending a connection from the server side needs PostgreSQL")
    conv = start(world, "carl", client="alex").conversation.id
    before = _counts(world, conv)
    group = GroupCommitter(world.runtime.db)
    hold = threading.Event()
    killed = threading.Event()

    def end_my_connection(uow: UnitOfWork) -> None:
        pid = uow.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        if not killed.is_set():  # the first time only: run alone, it gets through
            killed.set()
            with world.runtime.db.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        uow.conn.execute(text("SELECT 1"))

    try:
        first = group.submit(lambda uow: hold.wait(10))
        futures = [group.submit(_send(world, "carl", conv, f"k{i}", f"k-{i}")) for i in range(4)]
        victim = group.submit(end_my_connection)
        futures += [
            group.submit(_send(world, "carl", conv, f"k{i}", f"k-{i}")) for i in range(4, 8)
        ]
        hold.set()
        first.result(timeout=60)
        sent = [f.result(timeout=60) for f in futures]
        try:
            victim.result(timeout=60)
            outcome: BaseException | None = None
        except Exception as exc:
            outcome = exc
    finally:
        group.close()
    assert outcome is None or database_unavailable(outcome), repr(outcome)
    assert sorted(s.message.seq for s in sent) == list(range(2, 10))
    assert _counts(world, conv) == (before[0] + 8, before[1] + 8, before[2] + 8)
