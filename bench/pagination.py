"""Fetching pages of the seeded 100,000-message conversation.

In process: the repo alone (`list_messages`, a read transaction) and the whole service
(`reading.open_conversation`: access checks, decrypting 50 bodies, the audited read,
the unread count; one write transaction, as the HTTP route runs it). Over HTTP: GET
/api/v1/conversations/{id}?limit=50[&before_seq=N]&mark_read=false, one keep-alive
connection, one request at a time.

Each is measured for the newest page and for random older pages (`before_seq` drawn
uniformly over the conversation), as a participant who has read to the end ("reader")
and, for the newest page, as one who never opened it (every message unread: "cold").
"""

import http.client
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.loadgen import percentile
from bench.seed import Seeded, open_runtime
from confide.domain.actors import Actor, Party, Via
from confide.domain.ids import ConversationId, PracticeId
from confide.services import reading
from confide.store.uow import unit_of_work

PAGE = 50


@dataclass
class Timing:
    level: str  # "repo", "service", "http"
    what: str  # "newest", "older", "newest (cold reader)"
    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float


def _timing(level: str, what: str, samples: list[float]) -> Timing:
    s = sorted(samples)
    return Timing(
        level,
        what,
        len(s),
        percentile(s, 50) * 1000,
        percentile(s, 95) * 1000,
        statistics.fmean(s) * 1000,
    )


def _measure(fn: Callable[[int | None], int], args: list[int | None]) -> list[float]:
    out = []
    for a in args:
        t0 = time.perf_counter()
        got = fn(a)
        out.append(time.perf_counter() - t0)
        if got != PAGE:
            raise RuntimeError(f"expected a page of {PAGE} messages, got {got}")
    return out


def _older(seeded: Seeded, n: int, rng: random.Random) -> list[int | None]:
    return [rng.randint(PAGE + 1, seeded.big_messages) for _ in range(n)]


def inprocess(seeded: Seeded, *, n: int, seed: int = 7) -> list[Timing]:
    rng = random.Random(seed)
    runtime = open_runtime(seeded)
    pid, cid = PracticeId(seeded.practice_id), ConversationId(seeded.big_conversation_id)
    reader = Actor(pid, Party.member(seeded.reader_member_id), Via.API_TOKEN)
    cold = Actor(pid, Party.member(seeded.cold_member_id), Via.API_TOKEN)

    def repo(before: int | None) -> int:
        with unit_of_work(runtime.db, write=False) as uow:
            return len(uow.conversations.list_messages(pid, cid, before_seq=before, limit=PAGE))

    def service(actor: Actor) -> Callable[[int | None], int]:
        def fetch(before: int | None) -> int:
            with unit_of_work(runtime.db) as uow:
                page = reading.open_conversation(
                    uow, actor, cid, before_seq=before, limit=PAGE, mark_read=False
                )
            return len(page.messages)

        return fetch

    try:
        for _ in range(10):  # warm caches (statement cache, data key, page cache)
            repo(None)
            service(reader)(None)
        newest: list[int | None] = [None] * n
        return [
            _timing("repo", "newest", _measure(repo, newest)),
            _timing("repo", "older", _measure(repo, _older(seeded, n, rng))),
            _timing("service", "newest", _measure(service(reader), newest)),
            _timing("service", "older", _measure(service(reader), _older(seeded, n, rng))),
            _timing("service", "newest (cold reader)", _measure(service(cold), newest[: n // 2])),
        ]
    finally:
        runtime.close()


def over_http(seeded: Seeded, port: int, *, n: int, seed: int = 11) -> list[Timing]:
    rng = random.Random(seed)
    cid = seeded.big_conversation_id

    def client(token: str) -> Callable[[int | None], int]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}

        def fetch(before: int | None) -> int:
            q = f"limit={PAGE}&mark_read=false" + (f"&before_seq={before}" if before else "")
            conn.request("GET", f"/api/v1/conversations/{cid}?{q}", headers=headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET page answered {r.status}: {body[:200]!r}")
            return len(json.loads(body)["messages"])

        return fetch

    reader = client(seeded.reader_token)
    cold = client(seeded.cold_token)
    for _ in range(10):
        reader(None)
    newest: list[int | None] = [None] * n
    return [
        _timing("http", "newest", _measure(reader, newest)),
        _timing("http", "older", _measure(reader, _older(seeded, n, rng))),
        _timing("http", "newest (cold reader)", _measure(cold, newest[: n // 2])),
    ]
