"""A fresh data folder for the benchmarks, built through the real services.

One practice ("Bench Practice", plan plus, team and client messaging on) with:
- `senders` clinicians (basic access), each with an API token, the primary clinician
  of their own client, and their own conversation: even senders talk with that client,
  odd senders with another team member; each conversation has `history` messages;
- `extra_members` other team members in every role, and `clients` clients in all;
- one conversation of `big` messages (a clinician and a client, alternating, plus a
  practice manager who never reads it) for the pagination benchmark. Its messages
  hold what `messaging.send_message` writes (AES-GCM body under the message's
  associated data, audit row in the hash chain, outbox row), inserted 5,000 to a
  transaction with one executemany per table: through the service or the repo's
  `append_message` (a dozen statements per message) 100,000 took over two minutes.

The demo practice is created too (fast hashing), so `confide serve` in demo mode
starts without hashing passwords.
"""

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from sqlalchemy import func, insert, select, update

from confide.config import Settings
from confide.demo import ensure_demo_practice
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.entities import AccessLevel, Plan, Role
from confide.domain.ids import ConversationId, PracticeId
from confide.runtime import Runtime, build_runtime
from confide.services import clients, messaging, practice, sessions, team
from confide.store.clock import utcnow
from confide.store.crypto import message_aad, new_master_key_text
from confide.store.tables import ConversationRow, JobRow, MessageRow, OutboxRow, ParticipantRow
from confide.store.uow import unit_of_work

SEED_FILE = "bench-seed.json"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - throwaway benchmark data
BIG_BATCH = 5000

_PROSE = (
    "thanks for checking in this week the new routine is helping although sleep is "
    "still uneven could we talk about it on thursday I wrote down the questions you "
    "suggested and will bring the worksheet to our next session see you then"
)
_WORDS = _PROSE.split()


def message_text(i: int, length: int = 200) -> str:
    """Plain text of exactly `length` characters, different for each `i`."""
    out: list[str] = [f"#{i}"]
    n = len(out[0])
    k = i * 7
    while n < length:
        w = _WORDS[k % len(_WORDS)]
        out.append(w)
        n += len(w) + 1
        k += 3
    return " ".join(out)[:length].rstrip().ljust(length, ".")


@dataclass
class Sender:
    member_id: int
    token: str
    conversation_id: int
    with_client: bool


@dataclass
class Seeded:
    data_dir: str
    master_key: str
    practice_id: int
    senders: list[Sender]
    big_conversation_id: int
    big_messages: int
    reader_member_id: int  # a participant of the big conversation, reads it to the end
    reader_token: str
    cold_member_id: int  # a participant who never read it: everything is unread
    cold_token: str
    seconds: dict[str, float] = field(default_factory=dict)
    practice_conversations: int = 0  # other conversations of the practice (its size)

    def save(self) -> None:
        Path(self.data_dir, SEED_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, data_dir: Path) -> "Seeded":
        raw = json.loads((data_dir / SEED_FILE).read_text())
        raw["senders"] = [Sender(**s) for s in raw["senders"]]
        return cls(**raw)


def settings_for(data_dir: Path, master_key: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url="",  # SQLite in the data folder, whatever the environment says
        master_key=master_key,  # type: ignore[arg-type]
        demo=True,
        fast_password_hashing=True,
        secure_cookies=False,
        log_level="warning",
    )


def open_runtime(seeded: Seeded) -> Runtime:
    return build_runtime(settings_for(Path(seeded.data_dir), seeded.master_key))


def _token(runtime: Runtime, actor: Actor) -> str:
    with unit_of_work(runtime.db) as uow:
        return sessions.create_api_token(uow, actor, name="bench")[1]


def _member(
    runtime: Runtime,
    owner: Actor,
    name: str,
    roles: tuple[Role, ...],
    level: AccessLevel | None,
) -> int:
    with unit_of_work(runtime.db) as uow:
        return team.add_member(
            uow,
            owner,
            runtime.passwords,
            name=name,
            email=f"{name.lower().replace(' ', '.')}@bench.test",
            roles=roles,
            access_level=level,
            password=PASSWORD,
        ).id


def _send(runtime: Runtime, actor: Actor, conversation_id: int, text: str, key: str) -> None:
    with unit_of_work(runtime.db) as uow:
        messaging.send_message(uow, actor, messaging.SendMessage(conversation_id, text, key))


def _fill_big(
    runtime: Runtime,
    practice_id: PracticeId,
    conversation_id: ConversationId,
    a: Actor,
    b: Actor,
    first_seq: int,
    count: int,
) -> None:
    """`count` messages after `first_seq`, alternating a and b, BIG_BATCH to a
    transaction, written as `messaging.send_message` writes them (an encrypted body
    under the message's associated data, one audit row, one outbox row, the
    conversation's last_seq and the sender's read position) but with one executemany
    per table instead of a dozen statements per message."""
    keys = runtime.db.keys
    seq = first_seq
    end = first_seq + count
    while seq < end:
        batch = range(seq + 1, min(end, seq + BIG_BATCH) + 1)
        with unit_of_work(runtime.db) as uow:
            conn = uow.conversations.conn
            uow.conversations._ensure_key(practice_id)
            now = utcnow()
            rows = []
            for s in batch:
                actor = a if s % 2 == 0 else b
                rows.append(
                    {
                        "practice_id": practice_id,
                        "conversation_id": conversation_id,
                        "seq": s,
                        "sender_kind": actor.party.kind.value,
                        "sender_id": actor.party.id,
                        "idempotency_key": f"big-{s}",
                        "body": keys.encrypt(
                            practice_id,
                            message_text(s),
                            message_aad(practice_id, conversation_id, s),
                        ),
                        "created_at": now,
                    }
                )
            conn.execute(insert(MessageRow), rows)
            ids = dict(
                conn.execute(
                    select(MessageRow.seq, MessageRow.id).where(
                        MessageRow.practice_id == practice_id,
                        MessageRow.conversation_id == conversation_id,
                        MessageRow.seq >= batch[0],
                    )
                ).all()
            )
            outbox = []
            for s in batch:
                actor = a if s % 2 == 0 else b
                uow.audit.record(
                    actor,
                    "message.sent",
                    "message",
                    ids[s],
                    conversation_id=conversation_id,
                    seq=s,
                )
                payload = {
                    "conversation_id": conversation_id,
                    "message_id": ids[s],
                    "seq": s,
                    "sender": str(actor.party),
                }
                outbox.append(
                    {
                        "practice_id": practice_id,
                        "kind": "message.created",
                        "payload": json.dumps(payload, sort_keys=True, separators=(",", ":")),
                        "created_at": now,
                        "available_at": now,
                        "attempts": 0,
                    }
                )
            conn.execute(insert(OutboxRow), outbox)
            last = batch[-1]
            conn.execute(
                update(ConversationRow)
                .where(
                    ConversationRow.practice_id == practice_id,
                    ConversationRow.id == conversation_id,
                )
                .values(last_seq=last, last_activity_at=now)
            )
            for actor, parity in ((a, 0), (b, 1)):  # a sender has read what they sent
                own = last if last % 2 == parity else last - 1
                uow.conversations.mark_read(practice_id, conversation_id, actor.party, own)
            uow.commit()
        seq = batch[-1]


def _fill_practice(
    runtime: Runtime,
    practice_id: PracticeId,
    members: list[int],
    client_ids: list[int],
    count: int,
) -> None:
    """`count` older conversations of the practice, each between one of `members` and
    one of `client_ids`, without messages: a practice's size, which a send, a page or
    the real-time hub's batch must not walk (a lookup by key that walked the practice's
    index entries instead made a send 20 ms slower in a practice of 20,000
    conversations: store/repos/__init__.py, `scope_only`)."""
    now = utcnow()
    with unit_of_work(runtime.db) as uow:
        conn = uow.conversations.conn
        first = conn.execute(select(func.coalesce(func.max(ConversationRow.id), 0))).scalar_one()
        ids = range(first + 1, first + 1 + count)
        conversations, participants = [], []
        for n, cid in enumerate(ids):
            member, client = members[n % len(members)], client_ids[n % len(client_ids)]
            conversations.append(
                {
                    "id": cid,
                    "practice_id": practice_id,
                    "client_id": client,
                    "started_by_kind": PartyKind.MEMBER.value,
                    "started_by_id": member,
                    "last_seq": 0,
                    "last_activity_at": now,
                    "created_at": now,
                }
            )
            for kind, party in ((PartyKind.MEMBER, member), (PartyKind.CLIENT, client)):
                participants.append(
                    {
                        "practice_id": practice_id,
                        "conversation_id": cid,
                        "party_kind": kind.value,
                        "party_id": party,
                        "last_read_seq": 0,
                        "unread_count": 0,
                        "joined_at": now,
                    }
                )
        conn.execute(insert(ConversationRow), conversations)
        conn.execute(insert(ParticipantRow), participants)
        uow.commit()


def seed(
    data_dir: Path,
    *,
    senders: int = 50,
    extra_members: int = 10,
    clients_total: int = 200,
    history: int = 20,
    big: int = 100_000,
    practice_conversations: int = 10_000,
    log: Callable[[str], None] | None = None,
) -> Seeded:
    say = log or (lambda _s: None)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_master_key_text()
    runtime = build_runtime(settings_for(data_dir, key))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        ensure_demo_practice(runtime, Console(file=io.StringIO()), origin="http://127.0.0.1")
        with unit_of_work(runtime.db) as uow:
            pid, owner_id = practice.create_practice(
                uow,
                runtime.passwords,
                name="Bench Practice",
                plan=Plan.PLUS,
                owner_name="Bench Owner",
                owner_email="owner@bench.test",
                owner_password=PASSWORD,
                owner_access_level=AccessLevel.ENTIRE_PRACTICE,
            )
        owner = Actor(pid, Party.member(owner_id), Via.CLI)
        with unit_of_work(runtime.db) as uow:
            practice.set_messaging_switches(
                uow, owner, team=True, clients=True, auto_allow_new_clients=True
            )
        roles_cycle: list[tuple[tuple[Role, ...], AccessLevel | None]] = [
            ((Role.PRACTICE_MANAGER,), None),
            ((Role.CLINICIAN,), AccessLevel.ENTIRE_PRACTICE),
            ((Role.CLINICIAN, Role.SUPERVISOR), AccessLevel.BASIC),
            ((Role.SCHEDULER,), None),
            ((Role.BILLER,), None),
            ((Role.CLINICIAN,), AccessLevel.FULL_CLIENT_LIST),
        ]
        extras = [
            _member(runtime, owner, f"Extra Member {i}", *roles_cycle[i % len(roles_cycle)])
            for i in range(max(extra_members, 2))
        ]
        sender_ids = [
            _member(runtime, owner, f"Sender Clinician {i}", (Role.CLINICIAN,), AccessLevel.BASIC)
            for i in range(senders)
        ]
        client_ids: list[int] = []
        for i in range(max(clients_total, senders + 1)):
            primary = sender_ids[i] if i < senders else extras[1]
            with unit_of_work(runtime.db) as uow:
                client_ids.append(
                    clients.create_client(
                        uow,
                        owner,
                        name=f"Bench Client {i}",
                        email=f"client{i}@bench.test",
                        primary_clinician_id=primary,
                    ).id
                )
        timings["people"] = time.perf_counter() - t0
        say(f"seed: {len(extras) + senders + 1} members, {len(client_ids)} clients")

        t1 = time.perf_counter()
        out: list[Sender] = []
        for i, mid in enumerate(sender_ids):
            me = Actor(pid, Party.member(mid), Via.API_TOKEN)
            with_client = i % 2 == 0
            other = (
                Actor(pid, Party(PartyKind.CLIENT, client_ids[i]), Via.MAGIC_LINK)
                if with_client
                else Actor(pid, Party.member(extras[i % len(extras)]), Via.API_TOKEN)
            )
            with unit_of_work(runtime.db) as uow:
                started = messaging.start_conversation(
                    uow,
                    me,
                    messaging.StartConversation(
                        member_ids=() if with_client else (other.party.id,),
                        client_id=client_ids[i] if with_client else None,
                        text=message_text(0),
                        idempotency_key=f"start-{i}",
                    ),
                )
            cid = started.conversation.id
            for h in range(1, history):
                _send(runtime, other if h % 2 else me, cid, message_text(h), f"hist-{i}-{h}")
            out.append(Sender(mid, _token(runtime, me), cid, with_client))
        timings["conversations"] = time.perf_counter() - t1
        say(f"seed: {senders} sender conversations of {history} messages")

        t3 = time.perf_counter()
        everyone = [*extras, *sender_ids]  # ~170 conversations each, clients ~50
        _fill_practice(runtime, pid, everyone, client_ids, practice_conversations)
        timings["practice_conversations"] = time.perf_counter() - t3
        say(f"seed: {practice_conversations:,} other conversations of the practice")

        t2 = time.perf_counter()
        reader = Actor(pid, Party.member(extras[1]), Via.API_TOKEN)  # entire practice
        cold = Actor(pid, Party.member(extras[0]), Via.API_TOKEN)  # practice manager
        big_client = Actor(pid, Party(PartyKind.CLIENT, client_ids[senders]), Via.MAGIC_LINK)
        with unit_of_work(runtime.db) as uow:
            started = messaging.start_conversation(
                uow,
                reader,
                messaging.StartConversation(
                    member_ids=(cold.party.id,),
                    client_id=big_client.party.id,
                    text=message_text(0),
                    idempotency_key="big-start",
                ),
            )
        big_id = started.conversation.id
        _fill_big(runtime, pid, big_id, big_client, reader, 1, big - 1)
        timings["big_conversation"] = time.perf_counter() - t2
        say(f"seed: {big:,} messages in one conversation ({timings['big_conversation']:.1f} s)")

        # The history was delivered long ago: its outbox rows are done, so a relay in
        # the server starts with an empty queue, not a 100,000-row backlog; and its
        # notification jobs are done (their emails went out then), so the server's job
        # runner does not work through ~1,250 of them (claims, prepared emails, deferrals,
        # each a write transaction at SQLite's writer) during the first phases. With that
        # backlog a send at c=1 cost 1.6-1.8 ms of server CPU; without it, 1.3 ms.
        with unit_of_work(runtime.db) as uow:
            uow.conn.execute(
                update(OutboxRow).where(OutboxRow.done_at.is_(None)).values(done_at=utcnow())
            )
            uow.conn.execute(
                update(JobRow).where(JobRow.done_at.is_(None)).values(done_at=utcnow())
            )
            uow.commit()

        seeded = Seeded(
            data_dir=str(data_dir),
            master_key=key,
            practice_id=pid,
            senders=out,
            big_conversation_id=big_id,
            big_messages=big,
            reader_member_id=reader.party.id,
            reader_token=_token(runtime, reader),
            cold_member_id=cold.party.id,
            cold_token=_token(runtime, cold),
            seconds=timings,
            practice_conversations=practice_conversations,
        )
        with runtime.db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        seeded.save()
        return seeded
    finally:
        runtime.close()


if __name__ == "__main__":
    import sys
    import tempfile

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp("-confide-bench"))
    s = seed(target, log=print)
    print(f"seeded {target} in {sum(s.seconds.values()):.1f} s: {s.seconds}")
