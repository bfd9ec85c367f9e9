"""SECURITY-TESTS T02: the stateful IDOR hunt (issue 8).

A Hypothesis `RuleBasedStateMachine` drives the JSON API as the people of two practices
(tests/personas.py: an account owner, a practice manager, clinicians with basic, full
and billing access, a supervisor, a biller, clients, a contact; the other practice's
owner, clinician and client). Rules start conversations (member->client,
member->member, client->member), send messages, remove them, grant and revoke a
clinician's access to a client, turn a client's messaging, a member's EN2 box and the
practice's client switch off and on, remove a member (and bring them back), mark read,
read transcripts and copy messages to chart notes, and start data exports. Every id
ever seen (in a request or anywhere in a response body) is kept; the replay rules send
it to EVERY id-taking route of the API (derived from `app.routes`: a new route without
a REPLAY entry fails `test_t02_replay_covers_...`), as one actor or as every actor.
Every message text holds a unique canary.

The oracle is a model kept by the machine, written from SPEC, not the app's policy
code. An actor may see the text of message M of conversation C (practice P):

- reading (conversation pages, replies, socket frames): a participant of C in P who can
  still read it: an active member whose EN2 box is on (EN2) and who, for a client
  conversation, has access to the client (PM2; losing access closes the conversation,
  T04); a client or contact whose messaging and practice client switch are on (EN3,
  EN6). Never once M is removed (MS6).
- the record (transcripts, chart notes; removed messages keep their text, MS6, RC3):
  a member of P with access to C's client ("Access to a client", TR1); never for a
  team-only conversation (TR3).

Responses are checked against the state after the request. Socket frames are checked
against "ever could read": the union, since M was sent and until it was removed, of
the readers above (a frame made before a revocation may arrive after it). Nobody in
the other practice, and nobody outside C who lacks access to the client, may ever see
it. Notification emails (a real SMTP sink) and Web Push payloads (a local push service
decrypting with each subscription's keys) may hold no canary at all (NT1). A 2xx to a
write that names an object the actor may not read (send, remove, mark read, copy to a
chart note) counts as a leak too, and so does any 5xx.

Cost and settings (docs/security.md, T02): the default run is bounded for the suite's
wall time; `CONFIDE_IDOR_TEST=tier1` runs 200 examples x 30 steps and `tier2` 5,000 x 50.
Hypothesis runs derandomized (the same examples on every run and machine) without an
example database, so a CI failure replays as is; the failing example is printed as a
sequence of rule calls.
"""

import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from starlette.testclient import TestClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from confide.auth.vapid import load_or_create
from confide.domain.actors import Actor, PartyKind, Via
from confide.jobs import exports as export_jobs
from confide.jobs.outbox import relay_once
from confide.jobs.push import PushSender, push_once
from confide.runtime import Runtime
from confide.services import sessions
from confide.store.uow import unit_of_work
from confide.web.app import API_PREFIX, create_app
from confide.web.deps import session_cookie_name
from tests.integration.test_authz_matrix import ORIGIN, api_routes
from tests.integration.test_realtime import (  # noqa: F401 - the server fixture by name
    WAIT,
    Sock,
    _opened,
    open_socket,
    relayed,
    server,
)
from tests.mailsink import SmtpSink, drain, make_runner
from tests.personas import World, build_world
from tests.push_service import PushService, running_push_service

# --- who acts ---------------------------------------------------------------------------

MEMBERS_A = ("olivia", "priya", "carl", "fiona", "betty", "sam", "gus", "bill", "dora")
CLIENTS_A = ("alex", "jordan", "casey", "nora")
CONTACTS_A = ("pat",)  # of jordan
MEMBERS_B = ("owen", "bea")
CLIENTS_B = ("zoe",)
MEMBERS = (*MEMBERS_A, *MEMBERS_B)
CLIENTS = (*CLIENTS_A, *CLIENTS_B)
ACTORS = (*MEMBERS, *CLIENTS, *CONTACTS_A)
CONTACT_OF = {"pat": "jordan"}
# SPEC "Access to a client": these see every client of their practice (the account
# owner, a practice manager, a full-client-list clinician, a biller).
EVERY_CLIENT = frozenset({"olivia", "priya", "fiona", "bill", "owen"})
PRIMARY = {"alex": "carl", "casey": "carl", "jordan": "betty", "nora": None, "zoe": "bea"}
SUPERVISES = {"sam": frozenset({"carl"})}
MANAGERS = frozenset({"olivia", "priya", "owen"})  # team managers (grants, EN2 boxes)
OWNER = {"A": "olivia", "B": "owen"}
GRANTABLE = ("carl", "betty", "sam", "gus", "dora")  # clinicians and a supervisor of A

CANARY = re.compile(r"CNRY[0-9a-f]{8}N[0-9]+X")
_canaries = iter(range(1, 10**9))


def practice_of(name: str) -> str:
    return "B" if name in (*MEMBERS_B, *CLIENTS_B) else "A"


# --- the routes that take ids -----------------------------------------------------------

# How to replay a route: "read" (GET; every actor), "message" (a write about a message
# or conversation; every actor, outcome checked against the model), "admin" (a change
# of settings, people or access; replayed by every actor who is no team manager of the
# object's practice: anything but a refusal is an IDOR). T01 covers the in-practice
# matrix of the admin routes.
REPLAY: dict[tuple[str, str], str] = {
    ("GET", "/clients/{client_id}"): "read",
    ("GET", "/clients/{client_id}/transcript"): "read",
    ("GET", "/clients/{client_id}/chart-notes"): "read",
    ("POST", "/clients/{client_id}/chart-notes"): "message",
    ("GET", "/conversations/{conversation_id}"): "read",
    ("POST", "/conversations/{conversation_id}/messages"): "message",
    ("DELETE", "/conversations/{conversation_id}/messages/{message_id}"): "message",
    ("POST", "/conversations/{conversation_id}/read"): "message",
    ("GET", "/exports/{export_id}"): "read",
    ("GET", "/exports/{export_id}/download"): "read",
    ("DELETE", "/exports/{export_id}"): "admin",
    ("PATCH", "/clients/{client_id}/portal"): "admin",
    ("POST", "/clients/{client_id}/enable-messaging"): "admin",
    ("POST", "/clients/{client_id}/contacts"): "admin",
    ("PATCH", "/contacts/{contact_id}/portal"): "admin",
    ("PUT", "/clients/{client_id}/access/{member_id}"): "admin",
    ("DELETE", "/clients/{client_id}/access/{member_id}"): "admin",
    ("PATCH", "/members/{member_id}"): "admin",
    ("PUT", "/members/{member_id}/messaging"): "admin",
    ("PUT", "/members/{member_id}/supervisees"): "admin",
    ("POST", "/members/{member_id}/end-sessions"): "admin",
    ("POST", "/members/{member_id}/second-factor/reset"): "admin",
    ("DELETE", "/push/subscriptions/{subscription_id}"): "admin",
    ("DELETE", "/tokens/{token_id}"): "admin",
}
ADMIN_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/clients/{client_id}/portal"): {"messaging_enabled": False},
    ("POST", "/clients/{client_id}/contacts"): {"name": "Riley Relative", "relationship": "x"},
    ("PATCH", "/contacts/{contact_id}/portal"): {"messaging_enabled": False},
    ("PATCH", "/members/{member_id}"): {"active": False},
    ("PUT", "/members/{member_id}/messaging"): {"enabled": False},
}


# --- the model --------------------------------------------------------------------------


@dataclass
class Conv:
    practice: str
    client: str | None  # the client of a client or contact conversation
    participants: frozenset[str]


@dataclass
class Msg:
    conv: int
    sender: str
    canary: str
    removed: bool = False
    ever: set[str] = field(default_factory=set)  # who could ever read it (frames)


@dataclass
class Model:
    grants: set[tuple[str, str]] = field(default_factory=set)  # (client, member)
    member_box: dict[str, bool] = field(default_factory=dict)  # EN2
    client_on: dict[str, bool] = field(default_factory=dict)  # EN3 box of the client
    active: dict[str, bool] = field(default_factory=dict)  # members not removed
    clients_switch: dict[str, bool] = field(default_factory=dict)  # EN1/EN3, per practice
    convs: dict[int, Conv] = field(default_factory=dict)
    msgs: dict[int, Msg] = field(default_factory=dict)
    by_canary: dict[str, int] = field(default_factory=dict)
    # canaries of refused sends: they were never stored; only their writer may see them
    refused: dict[str, str] = field(default_factory=dict)
    version: int = 0  # moves on each change of who may read

    def has_access(self, member: str, client: str) -> bool:
        if member not in MEMBERS or practice_of(member) != practice_of(client):
            return False
        if not self.active[member]:
            return False
        return (
            member in EVERY_CLIENT
            or PRIMARY.get(client) == member
            or (client, member) in self.grants
            or PRIMARY.get(client) in SUPERVISES.get(member, frozenset())
        )

    def reads_conversation(self, actor: str, conv: Conv) -> bool:
        if practice_of(actor) != conv.practice or actor not in conv.participants:
            return False
        if actor in MEMBERS:
            if not (self.member_box[actor] and self.active[actor]):
                return False
            return conv.client is None or self.has_access(actor, conv.client)
        if not self.clients_switch[conv.practice]:
            return False  # EN3: the practice's client switch
        if actor in CONTACT_OF:
            return True  # the contact's own box is never turned off here
        return self.client_on[actor]

    def reads_record(self, actor: str, conv: Conv) -> bool:
        return conv.client is not None and self.has_access(actor, conv.client)

    def may_see_now(self, actor: str, msg_id: int) -> bool:
        m = self.msgs[msg_id]
        conv = self.convs[m.conv]
        if self.reads_record(actor, conv):
            return True
        return not m.removed and self.reads_conversation(actor, conv)

    def refresh_ever(self) -> None:
        self.version += 1
        for m in self.msgs.values():
            if not m.removed:
                conv = self.convs[m.conv]
                m.ever.update(a for a in conv.participants if self.reads_conversation(a, conv))


# --- one example's world and the shared fixtures ------------------------------------------


@dataclass
class Shared:
    runtime: Runtime
    app: FastAPI
    http: TestClient
    server: str
    sink: SmtpSink
    pushsvc: PushService
    pusher: PushSender
    timings: list[float] = field(default_factory=list)
    # how much the checks saw (so that a run that checks nothing shows): canaries in
    # responses and frames, messages stored, requests, emails and pushes checked
    seen: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        self.seen[what] = self.seen.get(what, 0) + n


class Reader:
    """One person's socket, read in a thread (a socket nobody reads is closed as a slow
    reader), keeping every frame's raw text. The server closes it when the person may
    no longer receive (EN2, EN6: 4403); `reopen` resumes from the last position."""

    def __init__(self, address: str, session_id: str) -> None:
        self.address, self.session_id = address, session_id
        self.raw: list[str] = []
        self.checked = 0  # frames already checked
        self.position = 0
        self.closed: int | None = None
        self.closed_at_version = -1
        self.stop = threading.Event()
        self.sock: Sock | None = None
        self.thread: threading.Thread | None = None
        self.reopen(0)

    def reopen(self, version: int) -> None:
        self.closed, self.closed_at_version = None, version
        if self.sock is not None:  # the server closed it
            self.sock.close()
            if self.sock.ws in _opened:
                _opened.remove(self.sock.ws)
        try:
            self.sock = Sock(open_socket(self.address, self.session_id))
            self.sock.send({"type": "resume", "cursor": self.position})
        except (ConnectionClosed, InvalidStatus) as exc:
            self.closed = getattr(getattr(exc, "rcvd", None), "code", -1) or -1
            return
        self.thread = threading.Thread(target=self.run, args=(self.sock,), daemon=True)
        self.thread.start()

    def run(self, sock: Sock) -> None:
        while not self.stop.is_set():
            try:
                raw = str(sock.ws.recv(timeout=0.2))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.closed = exc.rcvd.code if exc.rcvd else -1
                return
            self.raw.append(raw)
            position = json.loads(raw).get("position")
            if isinstance(position, int):
                self.position = max(self.position, position)

    def finish(self) -> None:
        """Stop reading; closing first ends a waiting `recv` at once."""
        self.stop.set()
        if self.sock is not None:
            self.sock.close()
            if self.sock.ws in _opened:  # open_socket keeps every socket for its module
                _opened.remove(self.sock.ws)
        if self.thread is not None:
            self.thread.join(WAIT)


def credentials(world: World, name: str) -> tuple[dict[str, str], str, int | None]:
    """API headers (members: a personal API token; clients and contacts: a portal
    session cookie, from the app's origin) and a session id for the socket."""
    actor = world.actor(name)
    is_member = actor.party.kind is PartyKind.MEMBER
    via = Via.PASSWORD if is_member else Via.MAGIC_LINK
    with unit_of_work(world.runtime.db) as uow:
        session_id = sessions.start_session(uow, Actor(actor.practice_id, actor.party, via))
        if is_member:
            token_id, token = sessions.create_api_token(uow, actor, name="idor")
            return {"Authorization": f"Bearer {token}"}, session_id, token_id
    cookie = session_cookie_name(world.runtime)
    return {"Cookie": f"{cookie}={session_id}", "Origin": ORIGIN}, session_id, None


def kept(value: int | None) -> Any:
    """A bundle entry for an id that was made, none for a refusal."""
    return multiple() if value is None else multiple(value)


def pick(data: st.DataObject, pool: Any) -> Any:
    """One item of a pool whose size depends on the database (ids, participants): an
    index drawn with fixed bounds, so that a replayed example draws the same way."""
    return pool[data.draw(st.integers(0, 2**16)) % len(pool)]


def path_params(template: str) -> list[str]:
    return re.findall(r"{(\w+)}", template)


# --- the machine --------------------------------------------------------------------------


class IdorMachine(RuleBasedStateMachine):
    shared: Shared  # set by the test before the run

    conversations = Bundle("conversations")
    messages = Bundle("messages")

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()
        sh = self.shared
        self.world = build_world(sh.runtime)
        self.tag = secrets.token_hex(4)
        self.mails_before = len(sh.sink.received)  # the mail of earlier examples
        self.model = Model(
            member_box={m: m != "dora" for m in MEMBERS},
            client_on={c: c != "casey" for c in CLIENTS},
            grants={("nora", "gus")},
            active=dict.fromkeys(MEMBERS, True),
            clients_switch={"A": True, "B": True},
        )
        self.ids: list[int] = []  # every id ever seen, in order (replays draw from it)
        self._seen: set[int] = set()
        self.leaks: list[str] = []
        self.headers: dict[str, dict[str, str]] = {}
        self.readers: dict[str, Reader] = {}
        self.devices: dict[str, str] = {}
        self.subscriptions: dict[int, str] = {}  # push subscription id -> its owner
        self.tokens: dict[int, str] = {}  # API token id -> its owner
        self.exports: dict[int, str] = {}  # export id -> practice
        self.practice_ids = {"A": self.world.practice_a, "B": self.world.practice_b}
        self.name_of = {(p.kind, p.id): n for n, p in self.world.parties.items()}
        for name in ACTORS:
            headers, session_id, token_id = credentials(self.world, name)
            if token_id is not None:
                self.tokens[token_id] = name
                self.see(token_id)
            self.headers[name] = headers
            self.readers[name] = Reader(sh.server, session_id)
            device = sh.pushsvc.device(name)
            r = self.call("POST", "/push/subscriptions", name, device.subscription())
            assert r.status_code == 201, r.text
            self.devices[name] = device.endpoint.rsplit("/", 1)[1]
            self.subscriptions[r.json()["id"]] = name
        for name in ACTORS:  # people's ids are ids too
            self.see(self.world.id(name))

    # -- plumbing ---------------------------------------------------------------------

    def see(self, value: Any) -> None:
        """Keep every id (a key "id" or "*_id", or an integer in a list under "*_ids")."""
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            if value not in self._seen:
                self._seen.add(value)
                self.ids.append(value)
            return
        if isinstance(value, dict):
            for k, v in value.items():
                if k == "id" or k.endswith("_id") or k.endswith("_ids") or isinstance(v, dict):
                    self.see(v)
                elif isinstance(v, list):
                    for item in v:
                        if isinstance(item, dict):
                            self.see(item)
        elif isinstance(value, list):
            for item in value:
                self.see(item)

    def canary(self, writer: str) -> str:
        """A new canary; until it is stored, only its writer may see it."""
        text = f"CNRY{self.tag}N{next(_canaries)}X"
        self.model.refused[text] = writer
        return text

    def call(self, method: str, path: str, actor: str, body: Any = None) -> Any:
        http = self.shared.http
        http.cookies.clear()
        r = http.request(method, f"{API_PREFIX}{path}", headers=self.headers[actor], json=body)
        self.shared.count("requests")
        if r.status_code >= 500:
            self.leaks.append(f"{r.status_code} on {method} {path} as {actor}")
        self.check_text(actor, r.text, f"{method} {path}")
        if r.headers.get("content-type", "").startswith("application/json"):
            self.see(r.json())
        return r

    def check_text(self, actor: str, text: str, where: str, *, frame: bool = False) -> None:
        found = set(CANARY.findall(text))
        self.shared.count("frame canaries" if frame else "response canaries", len(found))
        for canary in found:
            mid = self.model.by_canary.get(canary)
            if mid is None:
                if self.model.refused.get(canary) != actor:
                    self.leaks.append(f"{where}: {actor} saw a canary never stored ({canary})")
                continue
            ok = actor in self.model.msgs[mid].ever if frame else self.model.may_see_now(actor, mid)
            if not ok:
                m = self.model.msgs[mid]
                self.leaks.append(
                    f"{where}: {actor} saw message {mid} of conversation {m.conv} "
                    f"({self.model.convs[m.conv]}, removed={m.removed})"
                )

    def record_sent(self, r: Any, actor: str, text: str, conv: Conv | None) -> int | None:
        if r.status_code not in (200, 201) or conv is None:
            return None
        body = r.json()
        cid, mid = body["conversation_id"], body["message"]["id"]
        self.model.convs.setdefault(cid, conv)  # or an existing conversation, reused
        self.model.refused.pop(text, None)
        self.model.msgs[mid] = Msg(cid, actor, text, ever={actor})
        self.shared.count("messages")
        self.model.by_canary[text] = mid
        self.model.refresh_ever()
        return int(cid)

    # -- rules: conversations and messages ---------------------------------------------

    @initialize(target=conversations)
    def seed_conversations(self) -> Any:
        """Conversations SPEC allows, so that every example has some to work on: a
        clinician with a client and with a contact, a client with their clinician, team
        members, and the same in the other practice."""
        made = [
            self.member_starts_with_client("carl", "alex", None),
            self.member_starts_with_client("betty", "pat", None),
            self.client_starts_with_member("nora", "priya"),
            self.member_starts_with_member("olivia", "bill"),
            self.member_starts_with_client("bea", "zoe", None),
        ]
        ids = [v for m in made for v in m.values]
        assert len(ids) == len(made), ids  # the seed itself is allowed by SPEC
        return multiple(*ids)

    @rule(
        target=conversations,
        member=st.sampled_from(MEMBERS),
        client=st.sampled_from((*CLIENTS, *CONTACTS_A)),
        extra=st.none() | st.sampled_from(MEMBERS),
    )
    def member_starts_with_client(self, member: str, client: str, extra: str | None) -> Any:
        self.shared.count("rule member_starts_with_client")
        text = self.canary(member)
        members = [extra] if extra and extra != member else []
        body: dict[str, Any] = {
            "member_ids": [self.world.id(m) for m in members],
            "text": f"{text} to a client",
            "idempotency_key": text,
        }
        of = CONTACT_OF.get(client, client)
        body["client_id"] = self.world.id(of)
        if client in CONTACT_OF:
            body["contact_id"] = self.world.id(client)
        r = self.call("POST", "/conversations", member, body)
        conv = Conv(practice_of(member), of, frozenset({member, client, *members}))
        return kept(self.record_sent(r, member, text, conv))

    @rule(
        target=conversations,
        member=st.sampled_from(MEMBERS),
        other=st.sampled_from(MEMBERS),
    )
    def member_starts_with_member(self, member: str, other: str) -> Any:
        self.shared.count("rule member_starts_with_member")
        text = self.canary(member)
        body = {"member_ids": [self.world.id(other)], "text": text, "idempotency_key": text}
        r = self.call("POST", "/conversations", member, body)
        conv = Conv(practice_of(member), None, frozenset({member, other}))
        return kept(self.record_sent(r, member, text, conv))

    @rule(
        target=conversations,
        client=st.sampled_from((*CLIENTS, *CONTACTS_A)),
        member=st.sampled_from(MEMBERS),
    )
    def client_starts_with_member(self, client: str, member: str) -> Any:
        self.shared.count("rule client_starts_with_member")
        text = self.canary(client)
        body = {"member_ids": [self.world.id(member)], "text": text, "idempotency_key": text}
        r = self.call("POST", "/conversations", client, body)
        conv = Conv(
            practice_of(client), CONTACT_OF.get(client, client), frozenset({client, member})
        )
        return kept(self.record_sent(r, client, text, conv))

    @rule(target=messages, conv_id=conversations, data=st.data())
    def send(self, conv_id: int, data: st.DataObject) -> Any:
        self.shared.count("rule send")
        conv = self.model.convs.get(conv_id)
        pool = sorted(conv.participants) if conv and data.draw(st.booleans()) else ACTORS
        actor = pick(data, pool)
        text = self.canary(actor)
        r = self.call(
            "POST",
            f"/conversations/{conv_id}/messages",
            actor,
            {"text": text, "idempotency_key": text},
        )
        if r.status_code in (200, 201) and (conv is None or not self.reads(actor, conv)):
            self.leaks.append(f"{actor} wrote in conversation {conv_id} they may not read")
        self.record_sent(r, actor, text, conv)
        return kept(int(r.json()["message"]["id"]) if r.status_code in (200, 201) else None)

    def reads(self, actor: str, conv: Conv) -> bool:
        return self.model.reads_conversation(actor, conv)

    @rule(data=st.data(), by_sender=st.booleans(), actor=st.sampled_from(ACTORS))
    def remove(self, data: st.DataObject, by_sender: bool, actor: str) -> None:
        """MS6: any message stored so far (first messages of conversations included),
        by its sender or by anyone."""
        self.shared.count("rule remove")
        if not self.model.msgs:
            return
        msg_id = pick(data, list(self.model.msgs))
        m = self.model.msgs[msg_id]
        who = m.sender if by_sender else actor
        r = self.call("DELETE", f"/conversations/{m.conv}/messages/{msg_id}", who)
        self.after_remove(r, who, msg_id)

    def after_remove(self, r: Any, who: str, msg_id: int) -> None:
        if not 200 <= r.status_code < 300:
            return
        m = self.model.msgs[msg_id]
        if who != m.sender or not self.reads(who, self.model.convs[m.conv]):
            self.leaks.append(f"{who} removed message {msg_id} (sender {m.sender})")
        m.removed = True

    @rule(conv_id=conversations, actor=st.sampled_from(ACTORS))
    def mark_read(self, conv_id: int, actor: str) -> None:
        self.shared.count("rule mark_read")
        r = self.call("POST", f"/conversations/{conv_id}/read", actor, {"seq": 2**31 - 1})
        conv = self.model.convs.get(conv_id)
        if r.status_code == 200 and (conv is None or not self.reads(actor, conv)):
            self.leaks.append(f"{actor} marked conversation {conv_id} read without reading it")

    # -- rules: access and switches -------------------------------------------------------

    @rule(client=st.sampled_from(CLIENTS_A), member=st.sampled_from(GRANTABLE), on=st.booleans())
    def grant_or_revoke(self, client: str, member: str, on: bool) -> None:
        self.shared.count("rule grant_or_revoke")
        path = f"/clients/{self.world.id(client)}/access/{self.world.id(member)}"
        r = self.call("PUT" if on else "DELETE", path, "priya")
        assert r.status_code < 300, r.text
        self.model.refresh_ever()  # frames made before the change stay allowed
        if on:
            self.model.grants.add((client, member))
        else:
            self.model.grants.discard((client, member))
        self.model.refresh_ever()

    @rule(client=st.sampled_from(CLIENTS), on=st.booleans())
    def client_messaging(self, client: str, on: bool) -> None:
        self.shared.count("rule client_messaging")
        by = OWNER[practice_of(client)]
        r = self.call(
            "PATCH",
            f"/clients/{self.world.id(client)}/portal",
            by,
            {
                "messaging_enabled": on,
                "portal_access": True,
            },
        )
        assert r.status_code < 300, r.text
        self.model.client_on[client] = on
        self.model.refresh_ever()

    @rule(
        member=st.sampled_from(tuple(m for m in MEMBERS if m not in OWNER.values())),
        on=st.booleans(),
    )
    def member_messaging(self, member: str, on: bool) -> None:
        self.shared.count("rule member_messaging")
        by = OWNER[practice_of(member)]
        r = self.call("PUT", f"/members/{self.world.id(member)}/messaging", by, {"enabled": on})
        assert r.status_code < 300, r.text
        self.model.member_box[member] = on
        self.model.refresh_ever()

    @rule(
        member=st.sampled_from(tuple(m for m in MEMBERS if m not in OWNER.values())),
        on=st.booleans(),
    )
    def member_active(self, member: str, on: bool) -> None:
        """Remove a team member (and bring them back: their API token stays revoked)."""
        self.shared.count("rule member_active")
        by = OWNER[practice_of(member)]
        r = self.call("PATCH", f"/members/{self.world.id(member)}", by, {"active": on})
        assert r.status_code < 300, r.text
        self.model.active[member] = on
        self.model.refresh_ever()

    @rule(practice=st.sampled_from(("A", "B")), on=st.booleans())
    def practice_client_switch(self, practice: str, on: bool) -> None:
        """EN1/EN3: the practice's "messaging with clients" switch."""
        self.shared.count("rule practice_client_switch")
        r = self.call("PATCH", "/practice/messaging", OWNER[practice], {"client_messaging": on})
        assert r.status_code < 300, r.text
        self.model.clients_switch[practice] = on
        self.model.refresh_ever()

    # -- rules: records and exports -------------------------------------------------------

    @rule(actor=st.sampled_from(MEMBERS), client=st.sampled_from(CLIENTS), copy=st.booleans())
    def transcript(self, actor: str, client: str, copy: bool) -> None:
        self.shared.count("rule transcript")
        cid = self.world.id(client)
        self.call("GET", f"/clients/{cid}/transcript", actor)
        if copy:
            mine = [
                i for i, m in self.model.msgs.items() if self.model.convs[m.conv].client == client
            ]
            if mine:
                self.copy_to_chart_note(actor, cid, mine[-3:])

    def copy_to_chart_note(self, actor: str, client_id: int, message_ids: list[int]) -> None:
        r = self.call(
            "POST", f"/clients/{client_id}/chart-notes", actor, {"message_ids": message_ids}
        )
        if r.status_code == 201:
            self.chart_note_made(actor, client_id, message_ids)

    def chart_note_made(self, actor: str, client_id: int, message_ids: list[int]) -> None:
        """TR2: a chart note of a client holds messages of that client's conversations,
        written by someone with access to the client."""
        client = self.name_of.get((PartyKind.CLIENT, client_id))
        for mid in message_ids:
            m = self.model.msgs.get(mid)
            if client is None or m is None or self.model.convs[m.conv].client != client:
                self.leaks.append(f"{actor} copied message {mid} to client {client_id}'s notes")
        if client is None or not self.model.has_access(actor, client):
            self.leaks.append(f"{actor} wrote a chart note for client {client_id}")

    @rule(by=st.sampled_from(("priya", "owen")), run=st.booleans())
    def export(self, by: str, run: bool) -> None:
        self.shared.count("rule export")
        r = self.call("POST", "/exports", by, {"scope": "practice"})
        assert r.status_code < 300, r.text
        export_id = r.json()["export"]["id"]
        self.exports[export_id] = practice_of(by)
        if run:
            settings_ = self.shared.runtime.settings
            export_jobs.run_next_export(
                self.shared.runtime.db,
                export_dir=settings_.resolved_export_dir,
                only=export_id,
            )
            self.call("GET", f"/exports/{export_id}", by)

    # -- rules: replays -------------------------------------------------------------------

    @rule(data=st.data(), actor=st.sampled_from(ACTORS))
    def replay(self, data: st.DataObject, actor: str) -> None:
        self.shared.count("rule replay")
        self.replay_id(pick(data, self.ids), (actor,))

    @rule(data=st.data())
    def replay_as_everyone(self, data: st.DataObject) -> None:
        self.shared.count("rule replay_as_everyone")
        self.replay_id(pick(data, self.ids), ACTORS)

    @rule(actor=st.sampled_from(ACTORS))
    def look_around(self, actor: str) -> None:
        """Every GET route without ids (lists, counts, unread, recipients ...)."""
        self.shared.count("rule look_around")
        for method, path in sorted(api_routes(self.shared.app)):
            if method == "GET" and "{" not in path and not path.startswith("/auth/oidc"):
                self.call(method, path, actor)

    def partner(self, value: int, slot: str) -> int:
        """A value for another slot of a route: the conversation of a message, the
        newest message of a conversation, or a person of the value's practice."""
        m = self.model.msgs.get(value)
        if slot == "conversation_id" and m is not None:
            return m.conv
        if slot == "message_id":
            in_conv = [i for i, x in self.model.msgs.items() if x.conv == value]
            return in_conv[-1] if in_conv else value
        b = self.owner_practice("client_id", value) == "B" or (
            self.owner_practice("member_id", value) == "B"
        )
        if slot == "member_id":
            return self.world.id("bea" if b else "carl")
        if slot == "client_id":
            return self.world.id("zoe" if b else "alex")
        return value

    def owner_practice(self, slot: str, value: int) -> str | None:
        """The practice (of this example's world) of the object `value` names in
        `slot`, or None when no object of this world has that id."""
        kind = {
            "client_id": PartyKind.CLIENT,
            "member_id": PartyKind.MEMBER,
            "contact_id": PartyKind.CONTACT,
        }.get(slot)
        if kind is not None and (kind, value) in self.name_of:
            return practice_of(self.name_of[(kind, value)])
        if slot == "export_id":
            return self.exports.get(value)
        return None

    def replay_id(self, value: int, actors: tuple[str, ...]) -> None:
        for (method, template), kind in sorted(REPLAY.items()):
            slots = path_params(template)
            for slot in slots:
                filled = {s: value if s == slot else self.partner(value, s) for s in slots}
                for actor in actors:
                    if kind == "admin" and not self.outsider(actor, slot, value):
                        continue  # their own practice's settings: T01's matrix
                    self.replay_one(method, template, kind, filled, actor)

    def outsider(self, actor: str, slot: str, value: int) -> bool:
        """Who must be refused any change to the object: client-side people, members
        of another practice, and everyone but its owner for a push subscription."""
        if slot == "subscription_id":
            return self.subscriptions.get(value) != actor
        if slot == "token_id":
            return self.tokens.get(value) != actor
        owner = self.owner_practice(slot, value)
        return actor not in MEMBERS or owner is None or owner != practice_of(actor)

    def replay_one(
        self, method: str, template: str, kind: str, filled: dict[str, int], actor: str
    ) -> None:
        path = template.format(**filled)
        body: Any = ADMIN_BODIES.get((method, template))
        text = None
        if template.endswith("/messages") and method == "POST":
            text = self.canary(actor)
            body = {"text": text, "idempotency_key": text}
        elif template.endswith("/read"):
            body = {"seq": 2**31 - 1}
        elif template.endswith("/chart-notes") and method == "POST":
            value = filled["client_id"]
            recent = list(self.model.msgs)[-3:]
            # the id as the client (recent messages copied) and as a message (copied
            # into a client of the actor's practice)
            own = self.world.id("zoe" if practice_of(actor) == "B" else "alex")
            for client_id, ids in ((value, recent), (own, [value])):
                r = self.call(
                    method, f"/clients/{client_id}/chart-notes", actor, {"message_ids": ids}
                )
                if r.status_code == 201:
                    self.chart_note_made(actor, client_id, ids)
            return
        elif template.endswith("/supervisees"):
            body = {"supervisee_id": self.world.id("carl"), "on": False}
        r = self.call(method, path, actor, body)
        ok = 200 <= r.status_code < 300
        if kind == "admin" and ok:
            self.leaks.append(f"{actor} changed {method} {path} (not theirs to change)")
        if not ok or kind != "message":
            return
        cid = filled.get("conversation_id")
        conv = self.model.convs.get(cid) if cid is not None else None
        if text is not None:
            if conv is None or not self.reads(actor, conv):
                self.leaks.append(f"{actor} wrote in conversation {cid} by replay")
            self.record_sent(r, actor, text, conv)
        elif method == "DELETE":
            mid = filled["message_id"]
            if mid in self.model.msgs and self.model.msgs[mid].conv == cid:
                self.after_remove(r, actor, mid)
            else:
                self.leaks.append(f"{actor} removed {path} (not a message of that conversation)")
        elif template.endswith("/read") and (conv is None or not self.reads(actor, conv)):
            self.leaks.append(f"{actor} marked {path} read without reading it")

    # -- the invariant and the end of an example ----------------------------------------

    @invariant()
    def no_leak(self) -> None:
        self.model.refresh_ever()
        self.check_frames()
        assert not self.leaks, self.leaks[:10]

    def check_frames(self) -> None:
        for name, reader in self.readers.items():
            if reader.closed is not None and reader.closed_at_version != self.model.version:
                reader.reopen(self.model.version)  # it may receive again
            for raw in reader.raw[reader.checked :]:
                self.check_text(name, raw, "socket frame", frame=True)
            reader.checked = len(reader.raw)

    def teardown(self) -> None:
        try:
            self.finish()
        finally:
            for reader in self.readers.values():
                reader.finish()
            self.shared.timings.append(time.monotonic() - self.started)

    def finish(self) -> None:
        sh = self.shared
        relayed(self.world)
        time.sleep(0.3)  # frames already relayed reach the sockets
        self.model.refresh_ever()
        self.check_frames()
        # Pushes (NT4) of this example's events, then every email, with the clock
        # 11 minutes on so the 10-minute unread emails (NT3) are due too.
        while relay_once(sh.runtime.db) is not None:
            pass
        while push_once(sh.runtime.db, sh.pusher):
            pass
        practices = frozenset(self.practice_ids.values())
        with time_machine.travel(timedelta(minutes=11)):
            drain(make_runner(sh.runtime, sh.sink, practices=practices))
        for got in sh.pushsvc.received:
            if got.device in self.devices.values():
                sh.count("pushes")
                plain = (got.plaintext or b"").decode(errors="replace")
                if CANARY.search(plain):
                    self.leaks.append(f"push payload with a canary: {plain[:80]}")
        for mail in sh.sink.received[self.mails_before :]:
            sh.count("emails")
            if self.tag in mail.raw.decode(errors="replace"):
                self.leaks.append(f"email to {mail.rcpt_tos} holds a canary (NT1)")
        assert not self.leaks, self.leaks[:10]


def tier() -> tuple[int, int]:
    """(examples, steps): CONFIDE_IDOR_TEST=tier1 (200 x 30), tier2 (5,000 x 50) or
    "NxM"; unset, the suite's bounded run."""
    chosen = os.environ.get("CONFIDE_IDOR_TEST", "")
    if re.fullmatch(r"\d+x\d+", chosen):
        examples, steps = chosen.split("x")
        return int(examples), int(steps)
    tiers = {"tier1": (200, 30), "tier2": (5000, 50), "": (DEFAULT_EXAMPLES, DEFAULT_STEPS)}
    if chosen not in tiers:
        raise pytest.UsageError(f"CONFIDE_IDOR_TEST={chosen!r}: tier1, tier2 or NxM")
    return tiers[chosen]


DEFAULT_EXAMPLES = 6
DEFAULT_STEPS = 20


@pytest.fixture(scope="module")
def shared(runtime: Runtime, server: str) -> Iterator[Shared]:  # noqa: F811
    app = create_app(runtime)
    s = runtime.settings
    sink = SmtpSink()
    sink.start()
    with running_push_service() as pushsvc:
        pusher = PushSender(
            load_or_create(pem=None, path=s.vapid_key_file, subject=s.vapid_subject)
        )
        http = TestClient(app, base_url=ORIGIN, raise_server_exceptions=False)
        yield Shared(runtime, app, http, server, sink, pushsvc, pusher)
    sink.stop()


def test_t02_replay_covers_every_route_that_takes_an_id(shared: Shared):
    routes = {(m, p) for m, p in api_routes(shared.app) if "{" in p}
    assert routes == set(REPLAY), {
        "routes without a REPLAY entry": sorted(routes - set(REPLAY)),
        "REPLAY entries without a route": sorted(set(REPLAY) - routes),
    }


def test_t02_stateful_idor_hunt_finds_no_leak(shared: Shared):
    examples, steps = tier()
    IdorMachine.shared = shared
    run_state_machine_as_test(
        IdorMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        ),
    )
    mean = sum(shared.timings) / max(1, len(shared.timings))
    print(f"T02: {len(shared.timings)} examples x up to {steps} steps, {mean:.2f} s each")
    print(f"T02: checked {shared.seen}")
    # not vacuous: messages were stored, and their canaries came back to their readers
    assert shared.seen.get("messages", 0) > examples, shared.seen
    assert shared.seen.get("response canaries", 0) > 0, shared.seen
    assert shared.seen.get("frame canaries", 0) > 0, shared.seen
