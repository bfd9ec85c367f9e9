"""The unit of work's identity maps and a group command's end (store/uow.py).

A request reads its actor's member (or client) and practice several times, and a group
commit's sends share one transaction, so the repos keep what they read for the unit of
work. What must hold: a write through the repo is seen by the next read, a rollback
(of the unit of work, or of one group command) forgets what it had read, and a group
command is over once it has committed.
"""

import pytest
from sqlalchemy import func, select

from confide.domain.entities import Plan
from confide.domain.ids import MemberId
from confide.services import messaging
from confide.store.group import GroupCommitter
from confide.store.repos.jobs import KnownKeys, NewJob
from confide.store.tables import JobRow
from confide.store.uow import UnitOfWork, unit_of_work
from tests.personas import World, start


def test_a_write_through_the_repo_is_seen_by_the_next_read(world: World):
    carl = MemberId(world.id("carl"))
    with unit_of_work(world.runtime.db) as uow:
        assert uow.people.get_member(world.practice_a, carl).active
        uow.people.update_member(world.practice_a, carl, active=False)
        assert not uow.people.get_member(world.practice_a, carl).active
        assert uow.practices.get_practice(world.practice_a).plan is not Plan.STARTER
        uow.practices.update_practice(world.practice_a, plan=Plan.STARTER.value)
        assert uow.practices.get_practice(world.practice_a).plan is Plan.STARTER


def test_a_rolled_back_command_leaves_nothing_in_the_maps(world: World):
    carl = MemberId(world.id("carl"))
    with unit_of_work(world.runtime.db) as uow:
        with pytest.raises(RuntimeError), uow.command():
            uow.people.update_member(world.practice_a, carl, name="Changed")
            assert uow.people.get_member(world.practice_a, carl).name == "Changed"
            raise RuntimeError("the command fails")
        assert uow.people.get_member(world.practice_a, carl).name != "Changed"
        uow.people.update_member(world.practice_a, carl, name="Changed again")
        assert uow.people.get_member(world.practice_a, carl).name == "Changed again"
        uow.rollback()
        assert uow.people.get_member(world.practice_a, carl).name != "Changed again"


def test_a_group_command_ends_at_its_commit(world: World):
    """Its work is kept by the commit; anything after it is refused, not half-kept."""
    conv = start(world, "carl", client="alex").conversation.id
    actor = world.actor("carl")
    group = GroupCommitter(world.runtime.db)

    def send_then_more(uow: UnitOfWork) -> None:
        messaging.send_message(uow, actor, messaging.SendMessage(conv, "kept", "end-1"))
        uow.rollback()  # after the commit: the command is over

    try:
        with pytest.raises(RuntimeError, match="ends at its commit"):
            group.submit(send_then_more).result(timeout=60)
        again = group.submit(
            lambda uow: messaging.send_message(
                uow, actor, messaging.SendMessage(conv, "kept", "end-1")
            )
        ).result(timeout=60)
    finally:
        group.close()
    assert again.created is False  # the first command's commit stood


def test_nt3_a_job_key_is_known_only_once_committed(world: World):
    """A rolled-back unit of work's job keys are not remembered: the next enqueue with
    the same key still adds the job (it would be lost otherwise)."""
    jobs = [NewJob("notify.unread_email", {"conversation_id": 1}, "uow-test-key")]
    with unit_of_work(world.runtime.db) as uow:
        uow.jobs.enqueue_deduped(world.practice_a, jobs)
        uow.rollback()
        assert "uow-test-key" not in uow.jobs.known
    with unit_of_work(world.runtime.db) as uow:
        with pytest.raises(RuntimeError), uow.command():
            uow.jobs.enqueue_deduped(world.practice_a, jobs)
            raise RuntimeError("the command fails")
        uow.jobs.enqueue_deduped(world.practice_a, jobs)
        uow.commit()
        assert "uow-test-key" in uow.jobs.known
    with world.runtime.db.engine.connect() as conn:
        stored = conn.execute(
            select(func.count()).select_from(JobRow).where(JobRow.dedupe_key == "uow-test-key")
        ).scalar_one()
    assert stored == 1


def test_known_job_keys_keep_the_newest():
    known = KnownKeys(limit=3)
    known.add_all(["a", "b", "c", "d", "e"])
    assert [k in known for k in "abcde"] == [False, False, True, True, True]
