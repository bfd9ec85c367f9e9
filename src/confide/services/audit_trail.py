"""The audit trail (RC1, issue 7): the account owner and practice managers view, filter
and export their practice's audit log (who, what, when, from where).

- Who: `policy.may_view_audit_log`. Other team members get `403 not_permitted` (they
  know the log exists); clients and contacts get the NotFound of a route that does not
  exist (`acting_member`, PM7). Only the practice's own chain is ever read (chain_id =
  practice id), so another practice's rows, and chain 0, are out of reach.
- What each entry shows: who (actor kind and id, with the actor's current name and role
  label, resolved per page: names are shown only to those allowed to view the log),
  how they authenticated (`via`, `authenticated_entity`), what (action, target kind and
  id), when, from where (IP), and `meta` as stored: ids and flags only by construction
  (`AuditWriter.record`), never message text.
- Filters: actor (`member:12`, or a kind alone), action (exact, or a prefix ending in
  "." such as `message.`), target (`conversation:5`, or a kind alone), time range
  (aware timestamps; `from` inclusive, `to` exclusive). Newest first; pages of at most
  `MAX_PAGE` by `seq` (`before_seq`), so no row is skipped or repeated while the log
  grows.
- Viewing is audited (`audit_log.viewed`) in the same transaction as the read, and so is
  exporting (`audit_log.exported`, in a short write transaction before the rows are
  read); their meta holds the filters (kinds, ids, actions, times: no PHI).
- CSV: a header row, RFC 4180 quoting (the csv module, CRLF), and every text cell that
  a spreadsheet would run as a formula (starting with = + - @, tab or CR) gets a leading
  apostrophe. The export reads a fixed snapshot (the chain up to its head when the
  export began: rows up to it never change) in batches, each in its own short read
  transaction, so memory stays bounded and no transaction stays open while the
  response is sent.
"""

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind
from confide.domain.errors import InvalidInput, NotFound
from confide.domain.ids import PracticeId
from confide.services.access import acting_member, require
from confide.services.directory import PartyInfo, describe
from confide.store.clock import utcnow
from confide.store.repos.audit import MAX_AUDIT_PAGE, AuditEvent, AuditQuery
from confide.store.uow import UnitOfWork

DEFAULT_PAGE = 100
MAX_PAGE = MAX_AUDIT_PAGE
CSV_BATCH = 500
MAX_ID = 2**62
ACTOR_KINDS = frozenset(k.value for k in PartyKind)
CSV_HEADER = (
    "seq",
    "at",
    "actor_kind",
    "actor_id",
    "actor_name",
    "actor_role",
    "via",
    "authenticated_entity",
    "action",
    "target_kind",
    "target_id",
    "ip",
    "meta",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_REF = re.compile(r"(?P<kind>[a-z_]{1,30})(?::(?P<id>[0-9]{1,19}))?")
_ACTION = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*\.?")
_SYSTEM = PartyInfo(Party(PartyKind.SYSTEM, 0), "Confide", "System")


@dataclass(frozen=True, slots=True)
class AuditFilters:
    actor_kind: str | None = None
    actor_id: int | None = None
    action: str | None = None
    target_kind: str | None = None
    target_id: int | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None

    def query(self) -> AuditQuery:
        return AuditQuery(
            actor_kind=self.actor_kind,
            actor_id=self.actor_id,
            action=self.action,
            target_kind=self.target_kind,
            target_id=self.target_id,
            at_from=self.at_from,
            at_to=self.at_to,
        )

    def as_meta(self) -> dict[str, Any]:
        """The filters as given, for the audit row of the view: kinds, ids, an action
        name and times only (every part was validated, so nothing free-form)."""

        def ref(kind: str | None, ident: int | None) -> str | None:
            if kind is None:
                return None
            return kind if ident is None else f"{kind}:{ident}"

        return {
            "filter_actor": ref(self.actor_kind, self.actor_id),
            "filter_action": self.action,
            "filter_target": ref(self.target_kind, self.target_id),
            "filter_from": self.at_from.isoformat() if self.at_from else None,
            "filter_to": self.at_to.isoformat() if self.at_to else None,
        }


def _kind_and_id(text: str, what: str, kinds: frozenset[str] | None) -> tuple[str, int | None]:
    match = _REF.fullmatch(text.strip())
    ok = (
        match is not None
        and (kinds is None or match["kind"] in kinds)
        and (match["id"] is None or 1 <= int(match["id"]) <= MAX_ID)
    )
    if match is None or not ok:
        raise InvalidInput(
            f"invalid_{what}",
            f"{what} is KIND:ID (such as member:12) or a kind alone"
            + (f"; kinds: {', '.join(sorted(kinds))}." if kinds else "."),
        )
    return match["kind"], int(match["id"]) if match["id"] is not None else None


def parse_action(text: str) -> str:
    """An action name (`message.sent`) or a prefix ending in "." (`message.`)."""
    if len(text.strip()) > 60 or not _ACTION.fullmatch(text.strip()):
        raise InvalidInput(
            "invalid_action",
            'action is an action name such as message.sent, or a prefix ending in "." '
            "such as message.",
        )
    return text.strip()


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 timestamp with its offset (`2026-03-01T09:00:00Z`)."""
    try:
        value = datetime.fromisoformat(text.strip())
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive")
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            "invalid_time",
            f"{what} is an ISO 8601 time with its offset, such as 2026-03-01T09:00:00Z.",
        ) from None


def build_filters(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    at_from: str | None = None,
    at_to: str | None = None,
) -> AuditFilters:
    """Validate the filters of a request (empty values mean "any"); InvalidInput (422)
    with a code per filter for malformed values."""
    a_kind = a_id = t_kind = t_id = None
    if actor and actor.strip():
        a_kind, a_id = _kind_and_id(actor, "actor", ACTOR_KINDS)
    if target and target.strip():
        t_kind, t_id = _kind_and_id(target, "target", None)
    start = parse_time(at_from, "from") if at_from and at_from.strip() else None
    end = parse_time(at_to, "to") if at_to and at_to.strip() else None
    if start is not None and end is not None and start >= end:
        raise InvalidInput("invalid_time_range", "from must be before to.")
    return AuditFilters(
        actor_kind=a_kind,
        actor_id=a_id,
        action=parse_action(action) if action and action.strip() else None,
        target_kind=t_kind,
        target_id=t_id,
        at_from=start,
        at_to=end,
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    event: AuditEvent
    who: PartyInfo | None  # None when the actor is no longer known
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_before_seq: int | None


@dataclass(frozen=True)
class AuditExport:
    """An authorized, audited export: the practice, its filters, the snapshot bound."""

    practice_id: PracticeId
    filters: AuditFilters
    before_seq: int  # rows with seq < before_seq: fixed when the export began
    started_at: datetime

    @property
    def filename(self) -> str:
        return f"confide-audit-{self.started_at.date().isoformat()}.csv"


def _authorize(uow: UnitOfWork, actor: Actor) -> None:
    me = acting_member(uow, actor)  # clients, contacts: NotFound (PM7)
    require(policy.may_view_audit_log(me.member))


def _who(
    uow: UnitOfWork, practice_id: PracticeId, events: Sequence[AuditEvent]
) -> dict[Party, PartyInfo]:
    """Names and labels of a page's actors: team members in one query, each client or
    contact of the page once."""
    parties: set[Party] = set()
    for e in events:
        if e.actor_kind in ACTOR_KINDS:
            parties.add(Party(PartyKind(e.actor_kind), e.actor_id))
    out: dict[Party, PartyInfo] = {p: _SYSTEM for p in parties if p.kind is PartyKind.SYSTEM}
    out.update(describe(uow, practice_id, [p for p in parties if p.kind is PartyKind.MEMBER]))
    for p in parties:
        if p.kind in (PartyKind.CLIENT, PartyKind.CONTACT):
            # Never deleted (RC3); if it ever happens, shown by kind and id alone.
            with suppress(NotFound):
                out.update(describe(uow, practice_id, [p]))
    return out


def _entries(
    uow: UnitOfWork, practice_id: PracticeId, events: Sequence[AuditEvent]
) -> list[AuditEntry]:
    people = _who(uow, practice_id, events)
    out = []
    for e in events:
        who = (
            people.get(Party(PartyKind(e.actor_kind), e.actor_id))
            if e.actor_kind in ACTOR_KINDS
            else None
        )
        try:
            meta = json.loads(e.meta) if e.meta else {}
        except ValueError:
            meta = {}
        out.append(AuditEntry(e, who, meta if isinstance(meta, dict) else {}))
    return out


def list_audit_events(
    uow: UnitOfWork,
    actor: Actor,
    filters: AuditFilters,
    *,
    before_seq: int | None = None,
    limit: int = DEFAULT_PAGE,
) -> AuditPage:
    """One page of the practice's log, newest first; `next_before_seq` continues with
    older rows. Audited (`audit_log.viewed`) and committed."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_limit", f"limit must be between 1 and {MAX_PAGE}.")
    _authorize(uow, actor)
    pid = actor.practice_id
    events = uow.audit_log.list_events(pid, filters.query(), before_seq=before_seq, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    entries = _entries(uow, pid, events)
    uow.audit.record(
        actor,
        "audit_log.viewed",
        "practice",
        int(pid),
        **filters.as_meta(),
        before_seq=before_seq,
        limit=limit,
        rows=len(events),
    )
    uow.commit()
    return AuditPage(entries, events[-1].seq if more and events else None)


def begin_export(
    uow: UnitOfWork, actor: Actor, filters: AuditFilters, *, before_seq: int | None = None
) -> AuditExport:
    """Authorize and audit (`audit_log.exported`) an export, and fix its snapshot: the
    chain up to its head now (the export's own row is not in it). Commits: call it in a
    short write transaction, then read with `csv_lines`."""
    _authorize(uow, actor)
    pid = actor.practice_id
    bound = uow.audit_log.head_seq(pid) + 1
    if before_seq is not None:
        bound = min(bound, before_seq)
    uow.audit.record(
        actor,
        "audit_log.exported",
        "practice",
        int(pid),
        **filters.as_meta(),
        before_seq=before_seq,
        upto_seq=bound - 1,
    )
    uow.commit()
    return AuditExport(pid, filters, bound, utcnow())


def neutralise(cell: str) -> str:
    """Spreadsheet formula injection: a text cell starting with = + - @ (or tab, CR)
    gets a leading apostrophe, so a spreadsheet shows it as text."""
    return f"'{cell}" if cell.startswith(_FORMULA_START) else cell


def csv_row(entry: AuditEntry) -> list[str]:
    e, who = entry.event, entry.who
    cells: list[str | int | None] = [
        e.seq,
        e.at.isoformat(),
        e.actor_kind,
        e.actor_id,
        who.name if who else None,
        who.label if who else None,
        e.via,
        e.authenticated_entity,
        e.action,
        e.target_kind,
        e.target_id,
        e.ip,
        json.dumps(entry.meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
    ]
    return ["" if c is None else str(c) if isinstance(c, int) else neutralise(c) for c in cells]


def _lines(rows: Iterable[Sequence[str]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180; QUOTE_MINIMAL
    for row in rows:
        writer.writerow(row)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


def csv_lines(
    export: AuditExport,
    open_read: Callable[[], AbstractContextManager[UnitOfWork]],
    *,
    batch: int | None = None,
) -> Iterator[str]:
    """The export's CSV, one line (CRLF-terminated) at a time: the header, then every
    matching row of the snapshot, newest first. Each batch is read in its own unit of
    work from `open_read` (a read transaction), closed before any line is yielded."""
    batch = batch or CSV_BATCH
    yield from _lines([CSV_HEADER])
    before = export.before_seq
    query = export.filters.query()
    while before > 1:
        with open_read() as uow:
            events = uow.audit_log.list_events(
                export.practice_id, query, before_seq=before, limit=batch
            )
            entries = _entries(uow, export.practice_id, events)
        yield from _lines(csv_row(e) for e in entries)
        if len(events) < batch:
            return
        before = events[-1].seq


def export_audit_csv(
    uow: UnitOfWork, actor: Actor, filters: AuditFilters, *, before_seq: int | None = None
) -> Iterator[str]:
    """Authorize and audit now (raising before any line), then the CSV lines, read in
    `uow` (for one-thread callers such as the CLI; the web route reads each batch in a
    read transaction of its own)."""
    export = begin_export(uow, actor, filters, before_seq=before_seq)
    return csv_lines(export, lambda: nullcontext(uow))
