"""Web Push delivery (NT4), after commit.

`deliver_push(db, sender, practice_id, conversation_id, sender_party)` is the plain
function that sends the pushes of one new message: it reads who gets one (a read
transaction), sends each through the push service with VAPID (no transaction open),
and forgets a subscription the push service calls gone (404/410).

`PushConsumer` drives it: a small loop next to the outbox relay that follows the event
log's `message.created` rows with its own cursor (`job_cursors`, name "push"). One
process at a time holds the cursor's lease for a batch; the cursor moves on after the
batch was sent, so a crash mid-batch sends that batch again (at least once: a rare
duplicate push, never a lost one).

Why a cursor over the event log and not a job per message on the job runner: a job row
would be one more insert in every send's transaction (the hot path, docs/operations.md),
while the event log already holds every new message in commit order; one cursor update
per batch of up to 100 messages is all push costs the database.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from anyio import to_thread

from confide.auth.vapid import VapidKeys
from confide.domain.actors import Party, PartyKind
from confide.domain.ids import PracticeId
from confide.jobs.background import BackgroundLoop
from confide.services import push
from confide.store.clock import utcnow
from confide.store.db import Database
from confide.store.repos.events import StoredEvent
from confide.store.repos.push import Subscription
from confide.store.uow import UnitOfWork, listen_for_outbox, unit_of_work

log = logging.getLogger("confide.jobs")

CURSOR = "push"
BATCH = 100
LEASE = timedelta(seconds=60)
POLL_SECONDS = 1.0
GATHER_SECONDS = 0.25
TTL_SECONDS = 24 * 3600
TIMEOUT_SECONDS = 10.0
GONE = (404, 410)


@dataclass
class PushSender:
    """Sends one encrypted push (aes128gcm) with a VAPID signature."""

    keys: VapidKeys

    def send(self, subscription: Subscription, payload: bytes) -> int:
        """The push service's status code (2xx: accepted)."""
        # Imported here: pywebpush pulls in requests and aiohttp, over a second of start-up.
        from pywebpush import WebPushException, webpush  # type: ignore[import-untyped]

        info = {
            "endpoint": subscription.endpoint,
            "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
        }
        try:
            response: Any = webpush(
                info,
                data=payload.decode(),
                vapid_private_key=self.keys.vapid,
                vapid_claims={"sub": self.keys.subject},  # a fresh dict: webpush adds to it
                ttl=TTL_SECONDS,
                timeout=TIMEOUT_SECONDS,
                headers={"Urgency": "high"},
            )
        except WebPushException as exc:
            status = getattr(exc.response, "status_code", None)
            return int(status) if status is not None else 599
        return int(response.status_code)


def deliver_push(
    db: Database,
    sender: PushSender,
    practice_id: PracticeId,
    conversation_id: int,
    sender_party: Party | None,
) -> int:
    """The pushes of one new message; returns how many the push services accepted."""
    with unit_of_work(db, write=False) as uow:
        deliveries = push.new_message_deliveries(uow, practice_id, conversation_id, sender_party)
    accepted = 0
    for d in deliveries:
        try:
            status = sender.send(d.subscription, d.payload)
        except Exception as exc:  # a network error: the next message tries again
            log.warning("push failed (%s)", type(exc).__name__)
            continue
        if status in GONE:
            with unit_of_work(db) as uow:
                push.forget_gone_subscription(uow, d.subscription)
        elif 200 <= status < 300:
            accepted += 1
        else:
            log.warning("push service answered %s", status)
    return accepted


def _party(value: object) -> Party | None:
    if not isinstance(value, str) or ":" not in value:
        return None
    kind, _, pid = value.partition(":")
    try:
        return Party(PartyKind(kind), int(pid))
    except ValueError:
        return None


def _conversations_with_subscribers(
    uow: UnitOfWork, created: list[StoredEvent]
) -> set[tuple[PracticeId, int]]:
    """Of a batch's new messages, the conversations where someone could get a push."""
    by_practice: dict[PracticeId, set[int]] = {}
    for ev in created:
        by_practice.setdefault(ev.practice_id, set()).add(int(ev.payload["conversation_id"]))
    return {
        (practice_id, conversation_id)
        for practice_id, ids in by_practice.items()
        for conversation_id in uow.push.conversations_with_subscribers(practice_id, ids)
    }


def _created(events: list[StoredEvent]) -> list[StoredEvent]:
    return [ev for ev in events if ev.kind == "message.created"]


def push_once(
    db: Database, sender: PushSender, *, batch: int = BATCH, cursor_name: str = CURSOR
) -> int | None:
    """One batch of the event log after the cursor: the pushes of its new messages.
    None when another process holds the lease or nothing was new; else the count of
    events handled.

    A look first, in a read transaction: nothing after the cursor (how most rounds
    end) or another process's lease costs no write. A stretch of the log with nothing
    to push (no subscriber in its conversations) is passed over with one write that
    moves the cursor only if it is still where it was seen and free. Only a stretch
    with pushes to send takes the lease (a write), sends, and gives it back with the
    new position (a write): every write here waits for SQLite's one writer, with the
    sends' group commits."""
    now = utcnow()
    # What the look saw from the cursor: its position, the events after it, and the
    # conversations among them with a subscriber.
    looked: tuple[int, list[StoredEvent], set[tuple[PracticeId, int]]] | None = None
    with unit_of_work(db, write=False) as uow:
        head = uow.event_log.head()
        cursor = uow.push.peek_cursor(cursor_name)
        if cursor is not None:
            seen, leased_until = cursor
            if seen >= head or (leased_until is not None and leased_until > now):
                return None
            events = uow.event_log.read_after(seen, limit=batch)
            if not events:
                return None
            looked = (seen, events, _conversations_with_subscribers(uow, _created(events)))
    if looked is not None and not looked[2]:
        seen, events, _ = looked
        with unit_of_work(db) as uow:
            moved = uow.push.advance_free_cursor(cursor_name, seen, events[-1].position, now)
            uow.commit()
        return len(events) if moved else None
    with unit_of_work(db) as uow:
        position = uow.push.lease_cursor(cursor_name, now, now + LEASE, head)
        uow.commit()
    if position is None:
        return None
    if looked is not None and looked[0] == position:
        # The lease starts where the look did: its events are the batch (committed;
        # what came after them is the next round's), not read a second time.
        _, events, wanted = looked
        created = _created(events)
    else:
        with unit_of_work(db, write=False) as uow:
            events = uow.event_log.read_after(position, limit=batch)
            created = _created(events)
            wanted = _conversations_with_subscribers(uow, created)
    try:
        for ev in created:
            conversation_id = int(ev.payload["conversation_id"])
            if (ev.practice_id, conversation_id) in wanted:
                deliver_push(
                    db, sender, ev.practice_id, conversation_id, _party(ev.payload.get("sender"))
                )
    finally:
        last = events[-1].position if events else position
        with unit_of_work(db) as uow:
            uow.push.release_cursor(cursor_name, last)
            uow.commit()
    return len(events) or None


class PushConsumer(BackgroundLoop):
    """Runs `push_once` a quarter second after commits that added outbox rows (their
    events are in the log by then: the commit relayed them) and every second besides."""

    name = "push consumer"

    def __init__(
        self, db: Database, sender: PushSender, *, poll_seconds: float = POLL_SECONDS
    ) -> None:
        super().__init__(poll_seconds=poll_seconds)
        self.db = db
        self.sender = sender

    def listen(self) -> Callable[[], None]:
        return listen_for_outbox(self.db, self.wake)

    async def round(self) -> float | None:
        # Gather what commits in the next quarter second into one round: a round takes
        # the cursor's lease and gives it back (two write transactions), which under a
        # stream of sends would otherwise queue at SQLite's writer up to 20 times a second.
        await asyncio.sleep(GATHER_SECONDS)
        # On to the next batch only after a full one: under a stream of sends there is
        # always something new, and chasing it batch after batch of a few events would
        # cost a write each (the next commit wakes the next round anyway).
        while (handled := await to_thread.run_sync(push_once, self.db, self.sender)) and (
            handled >= BATCH
        ):
            pass
        return None
