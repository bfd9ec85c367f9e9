"""The audit log (RC1): appended in the caller's transaction, hash-chained, verifiable.

Each practice has its own chain (chain 0 holds practice-less events such as a failed
sign-in for an unknown email). A row's hash is an HMAC over the previous row's hash
and the row's own canonical content, keyed from the master key. `verify_chains`
recomputes every link and reports each row that was changed, removed, inserted or
moved, and a tail cut off after the chain head.

`AuditLogRepo` reads one practice's chain for the audit trail (issue 7): filtered,
newest first, in keyset pages by `seq`.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, insert, select, update

from confide.domain.actors import Actor
from confide.domain.ids import PracticeId
from confide.store.clock import aware, utcnow
from confide.store.crypto import KeyRing
from confide.store.hot import HotStatement
from confide.store.tables import AuditHeadRow, AuditRow, PracticeRow, core

GENESIS = "0" * 64


def canonical(
    chain_id: int,
    seq: int,
    at: datetime,
    actor_kind: str,
    actor_id: int,
    via: str,
    authenticated_entity: str | None,
    action: str,
    target_kind: str,
    target_id: int | None,
    ip: str | None,
    meta: str,
) -> bytes:
    return json.dumps(
        [
            chain_id,
            seq,
            aware(at).isoformat(),
            actor_kind,
            actor_id,
            via,
            authenticated_entity,
            action,
            target_kind,
            target_id,
            ip,
            meta,
        ],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode()


def head_mac(keys: KeyRing, chain_id: int, seq: int, digest: str) -> str:
    return keys.audit_mac("head", f"{chain_id}:{seq}:{digest}".encode())


@dataclass
class _Pending:
    actor: Actor
    action: str
    target_kind: str
    target_id: int | None
    meta: dict[str, Any] = field(default_factory=dict)


# Statements of every audited write, built once.
# Every group commit and every audited read runs these: on the driver's cursor
# (store/hot.py).
_LOCK_HEAD = HotStatement(
    select(AuditHeadRow.seq, AuditHeadRow.hash)
    .where(AuditHeadRow.chain_id == bindparam("chain"))
    .with_for_update()
)
_ROW_COLUMNS = [c.name for c in core(AuditRow).columns if c.name != "id"]
_INSERT_ROW = HotStatement(insert(core(AuditRow)).values({c: bindparam(c) for c in _ROW_COLUMNS}))
_MOVE_HEAD = HotStatement(
    update(AuditHeadRow)
    .where(AuditHeadRow.chain_id == bindparam("chain"))
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"), mac=bindparam("new_mac"))
)


class AuditWriter:
    """Collects the transaction's audit rows and chains them in at flush (before commit).

    Callers record; `flush` locks each chain's head row (FOR UPDATE on PostgreSQL; the
    single SQLite writer holds the database), appends, and moves the head.
    """

    def __init__(self, conn: Connection, keys: KeyRing) -> None:
        self.conn = conn
        self.keys = keys
        self._pending: list[_Pending] = []

    def record(
        self,
        actor: Actor,
        action: str,
        target_kind: str,
        target_id: int | None = None,
        **meta: Any,
    ) -> None:
        """`meta` holds ids and flags only: never message text, names or emails."""
        self._pending.append(_Pending(actor, action, target_kind, target_id, meta))

    def discard(self, keep: int = 0) -> None:
        """Drop the rows recorded since the first `keep` (all of them by default)."""
        del self._pending[keep:]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        if not self._pending:
            return
        by_chain: dict[int, list[_Pending]] = {}
        for p in self._pending:
            by_chain.setdefault(int(p.actor.practice_id), []).append(p)
        self._pending = []
        for chain_id in sorted(by_chain):  # a fixed lock order avoids deadlocks
            self._append(chain_id, by_chain[chain_id])

    def _lock_head(self, chain_id: int) -> tuple[int, str]:
        row = _LOCK_HEAD.one_or_none(self.conn, {"chain": chain_id})
        if row is None:
            # First event of the chain: create its head. A concurrent first writer on
            # PostgreSQL makes our insert fail; then the head exists, lock it instead.
            from sqlalchemy.exc import IntegrityError

            try:
                with self.conn.begin_nested():
                    self.conn.execute(
                        insert(AuditHeadRow).values(
                            chain_id=chain_id,
                            seq=0,
                            hash=GENESIS,
                            mac=head_mac(self.keys, chain_id, 0, GENESIS),
                        )
                    )
            except IntegrityError:
                pass
            row = _LOCK_HEAD.one(self.conn, {"chain": chain_id})
        return row[0], row[1]

    def _append(self, chain_id: int, items: list[_Pending]) -> None:
        seq, prev = self._lock_head(chain_id)
        now = utcnow()
        rows = []
        for p in items:
            seq += 1
            meta = json.dumps(p.meta, sort_keys=True, separators=(",", ":"), default=str)
            a = p.actor
            values = {
                "chain_id": chain_id,
                "seq": seq,
                "at": now,
                "actor_kind": a.party.kind.value,
                "actor_id": a.party.id,
                "via": a.via.value,
                "authenticated_entity": a.authenticated_entity,
                "action": p.action,
                "target_kind": p.target_kind,
                "target_id": p.target_id,
                "ip": a.ip,
                "meta": meta,
            }
            digest = self.keys.audit_mac(prev, canonical(**values))  # type: ignore[arg-type]
            rows.append({**values, "prev_hash": prev, "hash": digest})
            prev = digest
        _INSERT_ROW.many(self.conn, rows)
        _MOVE_HEAD.rows(
            self.conn,
            {
                "chain": chain_id,
                "new_seq": seq,
                "new_hash": prev,
                "new_mac": head_mac(self.keys, chain_id, seq, prev),
            },
        )


@dataclass(frozen=True)
class AuditProblem:
    chain_id: int
    seq: int | None
    row_id: int | None
    problem: str


@dataclass
class VerifyReport:
    chains: int = 0
    rows: int = 0
    problems: list[AuditProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(conn: Connection, batch: int = 5000) -> Iterator[Row[Any]]:
    """Every audit row in (chain, seq) order, in batches to keep memory bounded."""
    last: tuple[int, int] = (-1, -1)
    while True:
        rows = list(
            conn.execute(
                select(AuditRow.__table__)
                .where(
                    (AuditRow.chain_id > last[0])
                    | ((AuditRow.chain_id == last[0]) & (AuditRow.seq > last[1]))
                )
                .order_by(AuditRow.chain_id, AuditRow.seq)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = (rows[-1].chain_id, rows[-1].seq)


def verify_chains(conn: Connection, keys: KeyRing) -> VerifyReport:
    report = VerifyReport()
    heads: dict[int, tuple[int, str]] = {}
    for c, s, h, mac in conn.execute(
        select(AuditHeadRow.chain_id, AuditHeadRow.seq, AuditHeadRow.hash, AuditHeadRow.mac)
    ):
        heads[c] = (s, h)
        if mac != head_mac(keys, c, s, h):
            report.problems.append(
                AuditProblem(
                    c,
                    s,
                    None,
                    "chain head forged: its MAC does not match (the head "
                    "was moved, e.g. to hide rows cut from the end)",
                )
            )
    for (practice_id,) in conn.execute(select(PracticeRow.id)):
        if practice_id not in heads:
            report.problems.append(
                AuditProblem(
                    practice_id,
                    None,
                    None,
                    "practice without an audit chain "
                    "(every practice has one from its creation: chain removed)",
                )
            )
    seen: dict[int, tuple[int, str]] = {}
    chain: int | None = None
    exp_seq, prev_stored = 0, GENESIS

    def problem(
        row: Row[Any] | None, text: str, c: int | None = None, s: int | None = None
    ) -> None:
        report.problems.append(
            AuditProblem(
                row.chain_id if row else (c or 0),
                row.seq if row else s,
                row.id if row else None,
                text,
            )
        )

    for row in _rows(conn):
        report.rows += 1
        if row.chain_id != chain:
            if chain is not None:
                seen[chain] = (exp_seq, prev_stored)
            chain, exp_seq, prev_stored = row.chain_id, 0, GENESIS
            report.chains += 1
        exp_seq += 1
        if row.seq != exp_seq:
            problem(row, f"sequence gap: expected {exp_seq}, found {row.seq} (rows removed)")
            exp_seq = row.seq
        if row.prev_hash != prev_stored:
            problem(
                row,
                "chain broken: does not follow the row before it "
                "(a row was inserted, removed or moved)",
            )
        expected = keys.audit_mac(
            row.prev_hash,
            canonical(
                row.chain_id,
                row.seq,
                row.at,
                row.actor_kind,
                row.actor_id,
                row.via,
                row.authenticated_entity,
                row.action,
                row.target_kind,
                row.target_id,
                row.ip,
                row.meta,
            ),
        )
        if expected != row.hash:
            problem(row, "content changed: the row's hash does not match its content")
        prev_stored = row.hash
    if chain is not None:
        seen[chain] = (exp_seq, prev_stored)
    for chain_id, (seq, digest) in heads.items():
        last = seen.get(chain_id, (0, GENESIS))
        if last != (seq, digest):
            problem(
                None,
                f"chain tail does not match its head (head at {seq}, "
                f"log ends at {last[0]}): rows removed from the end",
                chain_id,
                seq,
            )
    for chain_id in seen.keys() - heads.keys():
        problem(None, "chain without a head row", chain_id, None)
    return report


# --- reading a practice's chain (the audit trail, issue 7) ---------------------------------

MAX_AUDIT_PAGE = 500


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters over one practice's chain; `None` means "any".

    `action` ending in "." is a prefix ("message." is every message action); otherwise
    exact. Times are aware; `at_from` is inclusive, `at_to` exclusive.
    """

    actor_kind: str | None = None
    actor_id: int | None = None
    action: str | None = None
    target_kind: str | None = None
    target_id: int | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One row of the log as stored (meta is the stored JSON text: ids and flags)."""

    seq: int
    at: datetime
    actor_kind: str
    actor_id: int
    via: str
    authenticated_entity: str | None
    action: str
    target_kind: str
    target_id: int | None
    ip: str | None
    meta: str


_EVENT_COLUMNS = (
    AuditRow.seq,
    AuditRow.at,
    AuditRow.actor_kind,
    AuditRow.actor_id,
    AuditRow.via,
    AuditRow.authenticated_entity,
    AuditRow.action,
    AuditRow.target_kind,
    AuditRow.target_id,
    AuditRow.ip,
    AuditRow.meta,
)


def _utc(value: datetime) -> datetime:
    # SQLite keeps UTC wall time as text: compare against UTC, never local time.
    return aware(value).astimezone(UTC)


class AuditLogRepo:
    """Read-only queries over one practice's chain (chain_id = practice id). Chain 0
    (practice-less events) is never reachable: a practice id is at least 1."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def head_seq(self, practice_id: PracticeId) -> int:
        """The chain's last sequence number (0 before its first row); rows up to it
        never change, so it fixes a snapshot for reading in several transactions."""
        seq = self.conn.execute(
            select(AuditHeadRow.seq).where(AuditHeadRow.chain_id == int(practice_id))
        ).scalar_one_or_none()
        return int(seq or 0)

    def list_events(
        self,
        practice_id: PracticeId,
        query: AuditQuery,
        *,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Matching rows, newest first (by `seq`), those with `seq < before_seq` only
        when given; at most `limit` (1 to MAX_AUDIT_PAGE + 1: callers read one more to
        know whether more follow)."""
        if not 1 <= limit <= MAX_AUDIT_PAGE + 1:
            raise ValueError(f"limit must be between 1 and {MAX_AUDIT_PAGE + 1}")
        stmt = select(*_EVENT_COLUMNS).where(AuditRow.chain_id == int(practice_id))
        if before_seq is not None:
            stmt = stmt.where(AuditRow.seq < before_seq)
        if query.actor_kind is not None:
            stmt = stmt.where(AuditRow.actor_kind == query.actor_kind)
        if query.actor_id is not None:
            stmt = stmt.where(AuditRow.actor_id == query.actor_id)
        if query.action is not None:
            if query.action.endswith("."):
                stmt = stmt.where(AuditRow.action.startswith(query.action, autoescape=True))
                family = query.action[:-1]
                if "." not in family and self.conn.dialect.name == "postgresql":
                    # The same rows, said so that the planner walks the action-family
                    # index in seq order (migration 0006): without it a family absent
                    # from this chain but common in others scans the whole chain.
                    stmt = stmt.where(func.split_part(AuditRow.action, ".", 1) == family)
            else:
                stmt = stmt.where(AuditRow.action == query.action)
        if query.target_kind is not None:
            stmt = stmt.where(AuditRow.target_kind == query.target_kind)
        if query.target_id is not None:
            stmt = stmt.where(AuditRow.target_id == query.target_id)
        if query.at_from is not None:
            stmt = stmt.where(AuditRow.at >= _utc(query.at_from))
        if query.at_to is not None:
            stmt = stmt.where(AuditRow.at < _utc(query.at_to))
        rows = self.conn.execute(stmt.order_by(AuditRow.seq.desc()).limit(limit))
        return [
            AuditEvent(
                seq=r.seq,
                at=aware(r.at),
                actor_kind=r.actor_kind,
                actor_id=r.actor_id,
                via=r.via,
                authenticated_entity=r.authenticated_entity,
                action=r.action,
                target_kind=r.target_kind,
                target_id=r.target_id,
                ip=r.ip,
                meta=r.meta,
            )
            for r in rows
        ]

    def iter_events(
        self,
        practice_id: PracticeId,
        query: AuditQuery,
        *,
        before_seq: int | None = None,
        batch: int = MAX_AUDIT_PAGE,
    ) -> Iterator[list[AuditEvent]]:
        """Every matching row, newest first, in batches of at most `batch` (memory stays
        bounded by one batch). Runs in this repo's transaction: for a long export in
        several short transactions, page with `list_events` and `before_seq` instead."""
        while True:
            rows = self.list_events(practice_id, query, before_seq=before_seq, limit=batch)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            before_seq = rows[-1].seq
