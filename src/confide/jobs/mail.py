"""Email: composing notices (NT1) and sending them (SMTP, or the mail folder).

`compose` renders one `Notice` (confide.domain.notices: typed fields that cannot hold
health information) through templates/mail/<name>.txt and .html into a multipart
message with `Auto-Submitted: auto-generated` and a Message-ID fixed per notification,
so a resend after a crash carries the same id.

Transports:
- `SmtpMailer`: `CONFIDE_SMTP_URL` = smtp://[user:pass@]host[:port] (STARTTLS when the
  server offers it; `?starttls=require` insists, `?starttls=off` never) or
  smtps://… (implicit TLS, port 465 by default). aiosmtplib, 20-second timeout.
- `FolderMailer`: the embedded default; one `.eml` file per email in data_dir/mail,
  written atomically (demo mode shows them at /dev/mailbox).
"""

import os
import secrets
from dataclasses import fields
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from anyio import to_thread
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from confide.domain.notices import Notice
from confide.store.clock import utcnow

TEMPLATES = Path(__file__).resolve().parents[1] / "web" / "templates" / "mail"
SMTP_TIMEOUT = 20.0

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


def compose(notice: Notice, *, to: str, mail_from: str, message_id: str) -> EmailMessage:
    """The email for a notice. Only the notice's own fields reach the templates."""
    context = {f.name: getattr(notice, f.name) for f in fields(notice)}
    text = _env.get_template(f"{notice.template}.txt").render(**context)
    html = _env.get_template(f"{notice.template}.html").render(**context)
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "confide.invalid"
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = notice.subject_line()
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = f"<{message_id}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


class SmtpMailer:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("CONFIDE_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        self.host = parts.hostname
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        mode = parse_qs(parts.query).get("starttls", ["auto"])[0]
        if mode not in ("auto", "require", "off"):
            raise ValueError("starttls must be auto, require or off")
        # aiosmtplib: None = use STARTTLS if offered, True = require it, False = never.
        self.start_tls: bool | None = {"auto": None, "require": True, "off": False}[mode]

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.implicit_tls,
            start_tls=None if self.implicit_tls else self.start_tls,
            timeout=SMTP_TIMEOUT,
        )


class FolderMailer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{secrets.token_hex(4)}.eml"
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / name)

    async def send(self, message: EmailMessage) -> None:
        await to_thread.run_sync(self._write, bytes(message))


def make_mailer(smtp_url: str | None, mail_dir: Path) -> Mailer:
    return SmtpMailer(smtp_url) if smtp_url else FolderMailer(mail_dir)
