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
from confide.domain.ids import ClientId, MemberId
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


def test_grants_and_supervision_written_are_seen_by_the_next_access_check(world: World):
    """The member-facts map (grants, supervisees) is dropped by the writes that change
    them, so a check after a grant or a revocation in the same unit of work is right."""
    pa, carl, sam = world.practice_a, MemberId(world.id("carl")), MemberId(world.id("sam"))
    jordan = ClientId(world.id("jordan"))
    olivia = MemberId(world.id("olivia"))
    with unit_of_work(world.runtime.db) as uow:
        facts = uow.people.member_facts(pa, uow.people.get_member(pa, carl))
        assert jordan not in facts.granted_client_ids
        uow.people.set_grant(pa, jordan, carl, olivia, True)
        assert (
            jordan
            in uow.people.member_facts(pa, uow.people.get_member(pa, carl)).granted_client_ids
        )
        assert [f.granted_client_ids for f in uow.people.facts_for(pa, [carl])] == [
            frozenset({jordan}) | facts.granted_client_ids
        ]
        uow.people.set_grant(pa, jordan, carl, olivia, False)
        assert (
            jordan
            not in uow.people.member_facts(pa, uow.people.get_member(pa, carl)).granted_client_ids
        )
        before = uow.people.member_facts(pa, uow.people.get_member(pa, sam)).supervisee_ids
        uow.people.set_supervision(pa, sam, MemberId(world.id("dora")), True)
        after = uow.people.facts_for(pa, [sam])[0].supervisee_ids
        assert after == before | {world.id("dora")}
        uow.rollback()
        assert uow.people.facts_for(pa, [sam])[0].supervisee_ids == before


def test_facts_of_many_members_at_once_equal_each_members_own(world: World):
    """`facts_for` (three queries for any number of members) loads what `member_facts`
    loads member by member, for every role and access level."""
    pa = world.practice_a
    ids = [
        p.id
        for n, p in world.parties.items()
        if world.practice_of[n] == pa and p.kind.value == "member"
    ]
    with unit_of_work(world.runtime.db) as uow:
        uow.people.set_grant(
            pa,
            ClientId(world.id("jordan")),
            MemberId(world.id("sam")),
            MemberId(world.id("olivia")),
            True,
        )
        uow.commit()
    with unit_of_work(world.runtime.db, write=False) as uow:
        together = {f.member.id: f for f in uow.people.facts_for(pa, ids)}
    for mid in ids:
        with unit_of_work(world.runtime.db, write=False) as uow:
            alone = uow.people.member_facts(pa, uow.people.get_member(pa, mid))
        assert together[mid] == alone, mid
    assert any(f.granted_client_ids for f in together.values())
    assert any(f.supervisee_ids for f in together.values())


def test_a_conversation_read_again_after_a_write_is_fresh(world: World):
    """The conversation map is dropped by a send, a read and a removal."""
    sent = start(world, "carl", client="alex", text="one")
    pa, conv = world.practice_a, sent.conversation.id
    alex = world.parties["alex"]
    with unit_of_work(world.runtime.db) as uow:
        assert uow.conversations.get_conversation(pa, conv).last_seq == 1
        uow.conversations.append_message(
            pa, conv, sender=world.parties["carl"], text="two", idempotency_key="fresh-2"
        )
        assert uow.conversations.get_conversation(pa, conv).last_seq == 2
        uow.conversations.mark_read(pa, conv, alex, 2)
        assert uow.conversations.get_conversation(pa, conv).participant(alex).last_read_seq == 2
        uow.rollback()
        assert uow.conversations.get_conversation(pa, conv).last_seq == 1


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
