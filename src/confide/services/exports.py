"""The practice data export (EX1-EX6).

- Who (EX1): `policy.may_export`: the account owner, and practice managers with
  `export_client_data`. Any other team member is refused `403 not_permitted` before any
  export is looked up (so the answer is the same for an id that does not exist);
  clients and contacts get the NotFound of a route that does not exist (PM7).
- Requesting (EX2, EX3): scope `practice` (every client, every team conversation) or
  `clinician` (the clients whose primary clinician they are, and the team conversations
  they take part in, EX6). A password is made by default: 24 random bytes (192 bits)
  as 32 URL-safe characters, returned ONCE, in the answer to the person who asked; it
  is kept encrypted only until the archive is written, then erased. Without a password
  the answer carries a warning, and `export.password_waived` is audited beside
  `export.requested`.
- Generating (EX4, EX5): `generate_archive` is the job's body (jobs/exports.py runs
  it): pages of clients, conversations and messages, each read in its own short read
  transaction and written straight into the zip entry, so memory stays bounded by a
  page whatever the practice's size. The archive is written as `<name>.part` and
  renamed when complete: a run that dies leaves no archive anyone can download.
- Downloading (EX3): a signed-in member with export permission, while the export is
  ready and its 72 hours have not passed; audited (`export.downloaded`, RC1).
"""

import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confide.domain import policy
from confide.domain.actors import Actor, Party, PartyKind
from confide.domain.entities import Client, Conversation, Role
from confide.domain.errors import Conflict, Gone, InvalidInput
from confide.domain.exports import (
    DOWNLOAD_LIFETIME,
    MAX_ATTEMPTS,
    PASSWORD_BYTES,
    DataExport,
    ExportScope,
    ExportStatus,
)
from confide.domain.ids import ConversationId, MemberId, PracticeId
from confide.domain.records import ChartNote
from confide.services.access import acting_member, require
from confide.services.directory import PartyInfo, describe
from confide.store.clock import utcnow
from confide.store.repos.exports import ExportedMessage
from confide.store.uow import UnitOfWork

log = logging.getLogger("confide.exports")

MAX_LISTED = 50
CLIENT_PAGE = 200
CONVERSATION_PAGE = 500
MESSAGE_PAGE = 2000
COMPRESS_LEVEL = 1  # deflate: speed first (EX4's bound), still shrinks text about 3x
FOLDER = "Secure messages"
NOTES_FOLDER = "Chart notes"
CHART_NOTE_PAGE = 100
UNPROTECTED_WARNING = (
    "This export is not password-protected: anyone who gets the file can read every "
    "message in it. Keep it on an encrypted disk and delete it when done."
)
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')

OpenUow = Callable[[], AbstractContextManager[UnitOfWork]]


class ExportCancelled(Exception):
    """The export was deleted, or claimed by another run, while this run wrote it."""


# --- requesting, listing, downloading, deleting -------------------------------------------


@dataclass(frozen=True)
class Requested:
    export: DataExport
    password: str | None  # shown once, to the person who asked (EX3)
    warning: str | None


def _authorize(uow: UnitOfWork, actor: Actor) -> None:
    me = acting_member(uow, actor)  # clients, contacts: NotFound (PM7)
    require(policy.may_export(me.member))


def request_export(
    uow: UnitOfWork,
    actor: Actor,
    *,
    scope: ExportScope,
    clinician_id: int | None = None,
    password_protected: bool = True,
) -> Requested:
    """EX1-EX3: queue an export; its password (if any) is in the answer, once."""
    _authorize(uow, actor)
    pid = actor.practice_id
    if scope is ExportScope.CLINICIAN:
        if clinician_id is None:
            raise InvalidInput(
                "clinician_required", "Choose the clinician whose clients to export."
            )
        clinician = uow.people.get_member(pid, clinician_id)  # NotFound: no such member
        if not clinician.has(Role.CLINICIAN):
            raise InvalidInput("not_a_clinician", "This team member is not a clinician.")
    elif clinician_id is not None:
        raise InvalidInput(
            "clinician_not_expected", "A clinician is chosen only with scope clinician."
        )
    password = secrets.token_urlsafe(PASSWORD_BYTES) if password_protected else None
    export = uow.exports.insert_export(
        pid,
        requested_by=MemberId(actor.party.id),
        scope=scope,
        clinician_id=MemberId(clinician_id) if clinician_id is not None else None,
        password=password,
    )
    uow.audit.record(
        actor,
        "export.requested",
        "export",
        export.id,
        scope=scope.value,
        clinician_id=clinician_id,
        password_protected=password_protected,
    )
    if not password_protected:
        uow.audit.record(actor, "export.password_waived", "export", export.id)
    uow.commit()
    return Requested(export, password, None if password_protected else UNPROTECTED_WARNING)


def list_exports(uow: UnitOfWork, actor: Actor) -> list[DataExport]:
    """The practice's latest exports, newest first (ids and states: no PHI)."""
    _authorize(uow, actor)
    return uow.exports.list_exports(actor.practice_id, limit=MAX_LISTED)


def get_export(uow: UnitOfWork, actor: Actor, export_id: int) -> DataExport:
    _authorize(uow, actor)
    return uow.exports.get_export(actor.practice_id, export_id)


def archive_path(export_dir: Path, export: DataExport) -> Path:
    return export_dir / f"{export.practice_id}-{export.id}.zip"


def download_name(export: DataExport) -> str:
    stamp = (export.finished_at or export.created_at).date().isoformat()
    return f"confide-export-{stamp}.zip"


def begin_download(
    uow: UnitOfWork, actor: Actor, export_id: int, *, export_dir: Path
) -> tuple[DataExport, Path]:
    """EX3: the ready archive, for a member with export permission, within 72 hours.
    Audited (`export.downloaded`) and committed before a byte is sent."""
    _authorize(uow, actor)
    export = uow.exports.get_export(actor.practice_id, export_id)
    now = utcnow()
    if export.status in (ExportStatus.EXPIRED, ExportStatus.DELETED) or (
        export.status is ExportStatus.READY and not export.downloadable(now)
    ):
        raise Gone("export_expired", "This export has expired or was deleted. Make a new one.")
    if export.status is not ExportStatus.READY:
        raise Conflict("export_not_ready", "This export is not ready to download.")
    path = archive_path(export_dir, export)
    if not path.is_file():
        log.error("export %s: archive missing", export.id)
        raise Gone("export_expired", "This export has expired or was deleted. Make a new one.")
    uow.audit.record(actor, "export.downloaded", "export", export.id, file_size=export.file_size)
    uow.commit()
    return export, path


def delete_export(uow: UnitOfWork, actor: Actor, export_id: int, *, export_dir: Path) -> DataExport:
    """Remove an export's archive before its time (or cancel a queued or running one).
    The row stays, marked `deleted` (RC3); the file goes after the commit."""
    _authorize(uow, actor)
    export = uow.exports.get_export(actor.practice_id, export_id)
    if export.status in (ExportStatus.EXPIRED, ExportStatus.DELETED):
        raise Gone("export_expired", "This export has expired or was deleted.")
    uow.exports.mark_gone(actor.practice_id, export.id, ExportStatus.DELETED)
    uow.audit.record(actor, "export.deleted", "export", export.id, status=export.status.value)
    path = archive_path(export_dir, export)
    uow.on_commit(lambda: _unlink(path))
    uow.commit()
    return uow.exports.get_export(actor.practice_id, export.id)


def _unlink(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".part")):
        p.unlink(missing_ok=True)


def expire_export(
    uow: UnitOfWork, practice_id: PracticeId, export_id: int, *, export_dir: Path
) -> None:
    """The sweeper: a ready export past its 72 hours loses its archive."""
    export = uow.exports.get_export(practice_id, export_id)
    if export.status is not ExportStatus.READY:
        return
    uow.exports.mark_gone(practice_id, export.id, ExportStatus.EXPIRED)
    uow.audit.record(Actor.system(practice_id), "export.expired", "export", export.id)
    uow.on_commit(lambda: _unlink(archive_path(export_dir, export)))
    uow.commit()


# --- the job's body: writing the archive -------------------------------------------------


def _safe(name: str) -> str:
    cleaned = _UNSAFE_NAME.sub("_", name).strip(" .") or "unnamed"
    return cleaned[:100]


def _stamp(at: datetime) -> str:
    """`2026-11-27 16:01:02 UTC` (`at` is UTC: naive, or aware in UTC)."""
    return at.isoformat(" ", "seconds")[:19] + " UTC"


def _who(info: PartyInfo | None, party: Party) -> str:
    if info is None:
        return f"{party.kind.value} {party.id}"
    return f"{info.name} ({info.label})"


@dataclass
class _Entry:
    """One text file of the archive: its people, and the conversations it holds."""

    title: str  # "Transcript of Alex Client" / "Team messages"
    readable_name: str  # the entry's name without a password
    people: list[Party]
    conversations: list[tuple[ConversationId, int]]  # (id, last seq): a snapshot


class _Writer:
    def __init__(
        self,
        zf: Any,  # pyzipper.AESZipFile
        open_read: OpenUow,
        export: DataExport,
        *,
        total: int,
        on_progress: Callable[[int], bool],
        practice_name: str,
    ) -> None:
        self.zf = zf
        self.open_read = open_read
        self.export = export
        self.total = max(total, 1)
        self.on_progress = on_progress
        self.practice_name = practice_name
        self.written = 0
        self.files = 0
        self.index: list[tuple[str, str]] = []
        self._names: set[str] = set()
        self._last_report = time.monotonic()

    def entry_name(self, readable: str, folder: str = FOLDER) -> str:
        self.files += 1
        if self.export.password_protected:
            return f"{folder}/{self.files:06d}.txt"  # EX5: opaque names
        base, n = f"{folder}/{_safe(readable)}", 1
        name = f"{base}.txt"
        while name.casefold() in self._names:
            n += 1
            name = f"{base} ({n}).txt"
        self._names.add(name.casefold())
        return name

    def write_entry(self, entry: _Entry) -> None:
        name = self.entry_name(entry.readable_name)
        with self.open_read() as uow:
            people = describe(uow, self.export.practice_id, entry.people)
        header = ", ".join(_who(people.get(p), p) for p in entry.people)
        self.index.append((name.removeprefix(f"{FOLDER}/"), f"{entry.title}: {header}"))
        with self.zf.open(name, "w", force_zip64=True) as out:
            out.write(
                (
                    f"People: {header}\n"
                    f"{entry.title}\n"
                    f"Practice: {self.practice_name}. Exported {_stamp(utcnow())} by Confide.\n"
                ).encode()
            )
            for conversation_id, last_seq in entry.conversations:
                out.write(f"\n=== Conversation {conversation_id} ===\n".encode())
                for page in self._pages(conversation_id, last_seq, people):
                    out.write(page.encode())

    def write_chart_notes(self, client: Client) -> None:
        """The client's chart notes (TR2), oldest first, in the `Chart notes` folder: a
        complete export (EX2) holds the client's record as well as the messages. The
        file starts with its person, the client (EX5); each note with who copied it
        and when, then its entries in the transcript's line format."""
        name = self.entry_name(client.name, NOTES_FOLDER)
        header = f"{client.name} (Client)"
        title = f"Chart notes of {client.name}"
        self.index.append((name, f"{title}: {header}"))
        pid, after = self.export.practice_id, 0
        with self.zf.open(name, "w", force_zip64=True) as out:
            out.write(
                (
                    f"People: {header}\n{title}\n"
                    f"Practice: {self.practice_name}. Exported {_stamp(utcnow())} by Confide.\n"
                ).encode()
            )
            while True:
                with self.open_read() as uow:
                    notes = uow.records.list_chart_notes_oldest_first(
                        pid, client.id, after_id=after, limit=CHART_NOTE_PAGE
                    )
                    authors = describe(uow, pid, {Party.member(n.created_by) for n in notes})
                for note in notes:
                    by = authors.get(Party.member(note.created_by))
                    out.write(
                        f"\n=== Chart note {note.id}, copied by "
                        f"{by.name if by else f'member {note.created_by}'} "
                        f"on {_stamp(note.created_at)} ===\n".encode()
                    )
                    out.write(_note_lines(note).encode())
                if len(notes) < CHART_NOTE_PAGE:
                    return
                after = notes[-1].id

    def _pages(
        self, conversation_id: ConversationId, last_seq: int, people: dict[Party, PartyInfo]
    ) -> Iterator[str]:
        after = 0
        pid = self.export.practice_id
        while after < last_seq:
            with self.open_read() as uow:
                messages = uow.exports.list_export_messages(
                    pid, conversation_id, after_seq=after, upto_seq=last_seq, limit=MESSAGE_PAGE
                )
                parties = {m.sender for m in messages}
                parties.update(m.removed_by for m in messages if m.removed_by is not None)
                unknown = [p for p in parties if p not in people]
                if unknown:
                    people.update(describe(uow, pid, unknown))
            if not messages:
                return
            names = {p: _who(i, p) for p, i in people.items()}
            yield "".join(_line(m, people, names) for m in messages)
            after = messages[-1].seq
            self.written += len(messages)
            self._report()

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < 1.0:
            return
        self._last_report = now
        if not self.on_progress(int(self.written * 100 / self.total)):
            raise ExportCancelled()


def _line(m: ExportedMessage, people: dict[Party, PartyInfo], names: dict[Party, str]) -> str:
    who = names.get(m.sender) or _who(None, m.sender)
    mark = ""
    if m.removed_at is not None:
        by = people.get(m.removed_by) if m.removed_by else None
        by_name = by.name if by else (str(m.removed_by) if m.removed_by else "unknown")
        mark = f" [REMOVED by {by_name} at {_stamp(m.removed_at)}]"
    if m.text is None:
        text = "[This message could not be read: its stored text failed its integrity check.]"
    else:
        # Plain text (MS4); continuation lines are indented so each message stays one
        # block that starts with its time.
        text = m.text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n    ")
    return f"[{_stamp(m.created_at)}] {who}{mark}: {text}\n"


def _note_lines(note: ChartNote) -> str:
    if note.unreadable:
        return "[This chart note could not be read: its stored text failed its integrity check.]\n"
    out = []
    for e in note.entries:
        mark = ""
        if e.removed_at is not None:
            mark = f" [REMOVED by {e.removed_by_name or 'unknown'} at {_stamp(e.removed_at)}]"
        if e.text is None:
            text = "[This message could not be read when it was copied.]"
        else:
            text = e.text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\n    ")
        out.append(f"[{_stamp(e.sent_at)}] {e.sender_name} ({e.sender_label}){mark}: {text}\n")
    return "".join(out)


def _chart_note_clients(open_read: OpenUow, export: DataExport) -> Iterator[Client]:
    """The clients in scope (EX2, EX6) who have at least one chart note, a page at a
    time."""
    after = 0
    pid = export.practice_id
    clinician = export.clinician_id if export.scope is ExportScope.CLINICIAN else None
    while True:
        with open_read() as uow:
            ids = uow.exports.list_scope_client_ids(
                pid, clinician_id=clinician, after_id=after, limit=CLIENT_PAGE
            )
            noted = uow.records.clients_with_chart_notes(pid, ids)
            batch = [uow.people.get_client(pid, cid) for cid in ids if cid in noted]
        yield from batch
        if len(ids) < CLIENT_PAGE:
            return
        after = ids[-1]


def _client_entries(open_read: OpenUow, export: DataExport) -> Iterator[_Entry]:
    """One transcript per client in scope with at least one conversation (EX5, EX6)."""
    after = 0
    pid = export.practice_id
    clinician = export.clinician_id if export.scope is ExportScope.CLINICIAN else None
    while True:
        with open_read() as uow:
            ids = uow.exports.list_scope_client_ids(
                pid, clinician_id=clinician, after_id=after, limit=CLIENT_PAGE
            )
            batch: list[tuple[Client, Sequence[Conversation]]] = []
            for cid in ids:
                found = uow.conversations.list_client_conversations(pid, cid)
                if found:
                    batch.append((uow.people.get_client(pid, cid), found))
        for client, conversations in batch:
            # The client comes first, even when only their contacts wrote.
            yield _Entry(
                title=f"Transcript of {client.name}",
                readable_name=client.name,
                people=_people_of(client.party, conversations),
                conversations=[(c.id, c.last_seq) for c in conversations],
            )
        if len(ids) < CLIENT_PAGE:
            return
        after = ids[-1]


def _people_of(client: Party, conversations: Sequence[Conversation]) -> list[Party]:
    order = {PartyKind.CLIENT: 0, PartyKind.CONTACT: 1, PartyKind.MEMBER: 2}
    seen = dict.fromkeys([client, *(p.party for c in conversations for p in c.participants)])
    return sorted(seen, key=lambda p: (order.get(p.kind, 3), p.id))


def _team_entries(open_read: OpenUow, export: DataExport) -> list[_Entry]:
    """One file per pair of team members (per group, for conversations of three or
    more): every team-only conversation of exactly those people, oldest first."""
    member = export.clinician_id if export.scope is ExportScope.CLINICIAN else None
    groups: dict[frozenset[Party], list[tuple[ConversationId, int]]] = {}
    after = 0
    while True:
        with open_read() as uow:
            page = uow.exports.list_team_conversations(
                export.practice_id, member_id=member, after_id=after, limit=CONVERSATION_PAGE
            )
        for c in page:
            groups.setdefault(c.members, []).append((c.id, c.last_seq))
        if len(page) < CONVERSATION_PAGE:
            break
        after = page[-1].id
    entries = []
    with open_read() as uow:
        for people, conversations in groups.items():
            names = describe(uow, export.practice_id, people)

            def name(p: Party, names: dict[Party, PartyInfo] = names) -> str:
                return names[p].name if p in names else str(p)

            ordered = sorted(people, key=lambda p: (name(p).casefold(), p.id))
            joined = (" and " if len(ordered) == 2 else ", ").join(map(name, ordered))
            entries.append(
                _Entry(
                    title=f"Team messages between {joined}",
                    readable_name=f"Team - {joined}",
                    people=ordered,
                    conversations=conversations,
                )
            )
    return entries


@dataclass(frozen=True)
class Generated:
    file_name: str
    file_size: int
    messages: int
    files: int


def generate_archive(
    open_read: OpenUow,
    export: DataExport,
    *,
    password: str | None,
    path: Path,
    on_progress: Callable[[int], bool],
) -> Generated:
    """Write the export's zip at `path` (via `path.part`, renamed when complete).

    Reads in pages, each in its own read transaction from `open_read`; message text is
    decrypted page by page and goes nowhere but into the (encrypted) zip entry.
    `on_progress(percent)` is called about once a second; when it answers False the
    run stops (ExportCancelled) and removes its partial file.
    """
    if export.password_protected and not password:
        raise ValueError("a password-protected export needs its password")
    part = path.with_name(path.name + ".part")
    with open_read() as uow:
        clinician = export.clinician_id if export.scope is ExportScope.CLINICIAN else None
        total = uow.exports.count_scope_messages(export.practice_id, clinician_id=clinician)
        practice_name = uow.practices.get_practice(export.practice_id).name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Imported here: pyzipper brings pycryptodomex, whose cffi parses C declarations at
    # import (~0.3 s and a few MB that every server start would pay for nothing).
    import pyzipper  # type: ignore[import-untyped]

    try:
        with pyzipper.AESZipFile(
            part,
            "w",
            compression=pyzipper.ZIP_DEFLATED,
            compresslevel=COMPRESS_LEVEL,
            encryption=pyzipper.WZ_AES if password else None,
        ) as zf:
            if password:
                zf.setpassword(password.encode())
                zf.setencryption(pyzipper.WZ_AES, nbits=256)  # EX3: AES-256, never ZipCrypto
            writer = _Writer(
                zf,
                open_read,
                export,
                total=total,
                on_progress=on_progress,
                practice_name=practice_name,
            )
            for entry in _client_entries(open_read, export):
                writer.write_entry(entry)
            for entry in _team_entries(open_read, export):
                writer.write_entry(entry)
            for client in _chart_note_clients(open_read, export):
                writer.write_chart_notes(client)
            if password:
                lines = "".join(f"{name}\t{what}\n" for name, what in writer.index)
                zf.writestr(
                    "index.txt",
                    f"Which file holds whose messages (the files are in '{FOLDER}'; "
                    f"chart notes are named with their folder, '{NOTES_FOLDER}').\n\n{lines}",
                )
        with part.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Generated(path.name, path.stat().st_size, writer.written, writer.files)


def finish_export(
    uow: UnitOfWork, export: DataExport, generated: Generated, *, attempt: int
) -> None:
    """Mark the export ready (72 hours to download) and audit it, in one transaction."""
    now = utcnow()
    uow.exports.mark_done(
        export.practice_id,
        export.id,
        file_name=generated.file_name,
        file_size=generated.file_size,
        messages=generated.messages,
        finished_at=now,
        expires_at=now + DOWNLOAD_LIFETIME,
    )
    uow.audit.record(
        Actor.system(export.practice_id),
        "export.generated",
        "export",
        export.id,
        messages=generated.messages,
        files=generated.files,
        file_size=generated.file_size,
        attempt=attempt,
    )
    uow.commit()


def fail_export(uow: UnitOfWork, export: DataExport, *, reason: str, attempt: int) -> bool:
    """A run failed: back to the queue while attempts remain, else failed for good
    (with the reason). Returns whether it will be retried."""
    retry = attempt < MAX_ATTEMPTS
    if retry:
        uow.exports.mark_retry(export.practice_id, export.id, error=reason)
    else:
        uow.exports.mark_failed(export.practice_id, export.id, error=reason)
    uow.audit.record(
        Actor.system(export.practice_id),
        "export.failed",
        "export",
        export.id,
        reason=reason,
        attempt=attempt,
        retry=retry,
    )
    uow.commit()
    return retry
