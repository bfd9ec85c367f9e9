"""T03 / issue 8 over sockets: while messages flow in every conversation of two practices,
no WebSocket frame reaches a user about a conversation the policy denies them.

Seventeen people of practices A and B (owners, managers, clinicians of every access
level, a supervisor, a biller, a scheduler, clients and a contact) hold a live socket
each. Eleven conversations (client, contact and team conversations in both practices)
get messages in rounds, from every participant in turn, with read positions moving and
a message removed in each. The policy's answer is taken from the API itself
(`GET /api/v1/conversations/{id}` as each person: 200 or 404), after the flow. Then:

- no frame naming a conversation (created, removed, read) reaches anyone the API
  refuses that conversation;
- no frame of any kind holds the text of a message its reader may not read (the
  texts are unique canaries, so unread totals, away frames and errors are covered too);
- and, so that the check is not vacuous, every participant who may read a conversation
  got every message of it (the removed ones aside: their text travels only if the frame
  was made before the removal, MS6).
"""

import json
import secrets
import threading
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from confide.domain.actors import PartyKind
from confide.services import messaging, reading
from confide.store.uow import unit_of_work
from tests.integration.test_realtime import (  # noqa: F401 - fixtures used by name
    WAIT,
    Sock,
    _close_sockets,
    live,
    send,
    server,
    session_of,
)
from tests.personas import World, start

PEOPLE = (
    *("olivia", "priya", "carl", "fiona", "erin", "betty", "sam", "gus", "bill", "sally"),
    *("alex", "jordan", "pat", "nora"),
    *("owen", "bea", "zoe"),
)
# (who starts, with whom, who then takes turns sending)
CONVERSATIONS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("carl", {"client": "alex"}, ("carl", "alex")),
    ("betty", {"client": "jordan"}, ("betty", "jordan")),
    ("betty", {"client": "jordan", "contact": "pat"}, ("betty", "pat")),
    ("olivia", {"members": ("carl", "bill")}, ("olivia", "carl", "bill")),
    ("sally", {"client": "nora"}, ("sally", "nora")),
    ("gus", {"client": "nora"}, ("gus", "nora")),
    ("erin", {"members": ("fiona",)}, ("erin", "fiona")),
    ("alex", {"members": ("carl",)}, ("alex", "carl")),
    ("owen", {"client": "zoe"}, ("owen", "zoe")),
    ("bea", {"client": "zoe"}, ("bea", "zoe")),
    ("owen", {"members": ("bea",)}, ("owen", "bea")),
]
ROUNDS = 5


class Reader:
    """Reads one socket all along (a socket nobody reads is closed as a slow reader),
    keeping every frame in `sock.seen`."""

    def __init__(self, sock: Sock) -> None:
        self.sock = sock
        self.stop = threading.Event()
        self.closed: int | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sock.seen.append(json.loads(self.sock.ws.recv(timeout=0.2)))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.closed = exc.rcvd.code if exc.rcvd else -1
                return

    def texts(self) -> set[str]:
        return {
            f["message"]["text"] for f in list(self.sock.seen) if f["type"] == "message.created"
        }

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)


def test_t03_no_socket_frame_about_a_conversation_the_policy_denies(
    world: World,
    server: str,  # noqa: F811 - the fixture imported above
):
    tag = secrets.token_hex(4)
    socks = {p: live(server, session_of(world, p)) for p in PEOPLE}
    readers = {p: Reader(sock) for p, sock in socks.items()}

    convs: list[int] = []
    texts: dict[int, list[str]] = {}
    participants: dict[int, set[str]] = {}
    removed: set[str] = set()  # their text may never travel, depending on timing (MS6)
    by_party = {party: name for name, party in world.parties.items()}
    for k, (starter, who, _senders) in enumerate(CONVERSATIONS):
        first = f"canary-{tag}-c{k}-start"
        sent = start(world, starter, text=first, **who)
        cid = sent.conversation.id
        convs.append(cid)
        texts[cid] = [first]
        participants[cid] = {by_party[p.party] for p in sent.conversation.participants}

    for r in range(ROUNDS):
        for k, (_starter, _who, senders) in enumerate(CONVERSATIONS):
            cid = convs[k]
            sender = senders[r % len(senders)]
            text = f"canary-{tag}-c{k}-m{r}"
            sent = send(world, sender, cid, text)
            texts[cid].append(text)
            reader = senders[(r + 1) % len(senders)]
            with unit_of_work(world.runtime.db) as uow:
                reading.mark_read(uow, world.actor(reader), cid, seq=sent.message.seq)
            if r == 2 and world.actor(sender).party.kind is PartyKind.MEMBER:
                # MS6: a removal travels too (ids only; team members remove their own)
                with unit_of_work(world.runtime.db) as uow:
                    messaging.remove_message(uow, world.actor(sender), cid, sent.message.id)
                removed.add(text)

    # The policy, as the API answers each person about each conversation.
    may_read = {
        (p, cid): world.api(p).get(f"/api/v1/conversations/{cid}?mark_read=false").status_code
        for p in PEOPLE
        for cid in convs
    }
    assert set(may_read.values()) == {200, 404}, may_read
    allowed = {key for key, status in may_read.items() if status == 200}
    # Both practices really took part, and some people may read what they are not in.
    assert ("owen", convs[-1]) in allowed and ("olivia", convs[0]) not in allowed

    # Every participant who may read a conversation gets all of it (bounded wait) ...
    expected = {
        p: {
            t
            for cid in convs
            if (p, cid) in allowed and p in participants[cid]
            for t in texts[cid]
            if t not in removed
        }
        for p in PEOPLE
    }
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and any(
        not expected[p] <= readers[p].texts() for p in PEOPLE
    ):
        time.sleep(0.1)
    time.sleep(1.0)  # anything else would arrive by now
    for reader in readers.values():
        reader.finish()
    missing = {p: sorted(expected[p] - readers[p].texts())[:3] for p in PEOPLE}
    assert not any(missing.values()), (missing, {p: r.closed for p, r in readers.items()})

    # ... and nothing of a conversation the policy denies them.
    leaks = []
    for p, sock in socks.items():
        denied = [cid for cid in convs if (p, cid) not in allowed]
        for f in sock.seen:
            cid = f.get("conversation_id")
            if cid in denied:
                leaks.append((p, f["type"], cid))
        dump = json.dumps(sock.seen)
        leaks += [(p, "text", t) for cid in denied for t in texts[cid] if t in dump]
    assert not leaks, leaks[:20]
    frames = sum(len(s.seen) for s in socks.values())
    assert frames > 100, frames  # the stream really flowed
