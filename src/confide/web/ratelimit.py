"""T11: the send rate, a token bucket per sender (docs/security.md, "Send rate").

Every sender (a team member or a client-side party, within its practice) may send
`send_rate_per_second` messages a second on average, in bursts of up to `send_burst`;
sending in a conversation and starting one both count. Over it: 429 `rate_limited`
with Retry-After (whole seconds, rounded up), and nothing is stored.

The check runs before any database work. The pages and `POST /conversations` know the
actor already (their dependency authenticated it). The API's hot send route
authenticates inside its group commit (store/group.py), so before it queues the command
it has only the credentials: a credential seen before is counted under the sender its
last send was made by (`learn`); a new one under its own digest until its first send
is answered, and that send is then counted under the sender too. A new session's
sends made before its first answer (at most a burst, if sent all at once) are the only
ones that can pass the sender's bucket, and a session takes a sign-in, which has limits
of its own.

Buckets live in the process (several `serve` processes each count on their own;
docs/security.md says why that is the choice). Memory is bounded: past `max_keys`
buckets, the full ones (senders idle long enough to have every token back) go.
"""

import hashlib
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from confide.domain.actors import Actor, Party
from confide.domain.errors import RateLimited
from confide.web.deps import Credentials, CurrentActor

MAX_KEYS = 100_000


class TokenBuckets:
    """One bucket per key: `burst` tokens, refilled at `rate` a second."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of 1 or more")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[Hashable, list[float]] = {}  # key -> [tokens, as of]
        self._lock = threading.Lock()  # the pages' sends run in worker threads

    def take(self, key: Hashable) -> float:
        """Takes a token from `key`'s bucket: 0.0 if there was one, else the seconds
        until there is (and nothing is taken)."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._prune(now)
                self._buckets[key] = [self.burst - 1, now]
                return 0.0
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens >= 1 - 1e-9:  # float sums of the refill: a hair under is one
                bucket[0] = max(0.0, tokens - 1)
                return 0.0
            bucket[0] = tokens
            return (1 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        full = [
            key
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            # Every bucket is in use (a flood of distinct keys): start over rather than
            # grow without bound; each key gets at most one more burst.
            self._buckets.clear()


class SendLimiter:
    """The process's send buckets (`app.state.send_limiter`); off when the rate is 0."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = MAX_KEYS) -> None:
        self.buckets = TokenBuckets(rate, burst, max_keys=max_keys) if rate > 0 else None
        self.max_keys = max_keys
        self._senders: dict[bytes, tuple[int, Party]] = {}  # credential digest -> sender

    def admit(self, actor: Actor) -> None:
        """Raises `RateLimited` (429) when `actor` is over the send rate."""
        self._take((actor.practice_id, actor.party))

    def admit_credentials(self, creds: Credentials) -> "Admitted":
        """`admit` for a request not yet authenticated (the API's send route)."""
        if self.buckets is None:
            return Admitted(b"", counted=True)
        digest = _digest(creds)
        sender = self._senders.get(digest)
        self._take(sender or ("credential", digest))
        return Admitted(digest, counted=sender is not None)

    def learn(self, admitted: "Admitted", practice_id: int, sender: Party) -> None:
        """After a send admitted by `admit_credentials` was answered: its credentials
        belong to `sender`, and a send counted under the credentials alone is counted
        under the sender too (a token taken if there is one)."""
        if self.buckets is None or admitted.counted:
            return
        key = (practice_id, sender)
        self.buckets.take(key)
        if admitted.digest not in self._senders:
            if len(self._senders) >= self.max_keys:
                self._senders.pop(next(iter(self._senders)), None)  # the oldest
            self._senders[admitted.digest] = key

    def _take(self, key: Hashable) -> None:
        if self.buckets is None:
            return
        wait = self.buckets.take(key)
        if wait > 0:
            raise RateLimited(wait)


@dataclass(frozen=True, slots=True)
class Admitted:
    digest: bytes
    counted: bool  # already counted under the sender (not the credentials alone)


def _digest(creds: Credentials) -> bytes:
    # Buckets outlive requests: keep a digest, never the session id or token itself.
    secret = creds.token if creds.token is not None else f"session:{creds.session_id}"
    return hashlib.blake2b(secret.encode(), digest_size=16).digest()


def send_limiter(request: Request) -> SendLimiter:
    limiter: SendLimiter = request.app.state.send_limiter
    return limiter


def admit_sender(request: Request, actor: CurrentActor) -> Actor:
    """Dependency of the routes that send or start a conversation with an authenticated
    actor (`POST /conversations`, the pages' send forms): T11 before any work."""
    send_limiter(request).admit(actor)
    return actor


SendRate = Depends(admit_sender)
SendingActor = Annotated[Actor, SendRate]
