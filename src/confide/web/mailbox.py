"""The local mailbox of demo mode: the emails the embedded default wrote to
data_dir/mail, so a person trying Confide can open the links. Mounted only in demo
mode without CONFIDE_SMTP_URL (web/app.py); in production emails go to SMTP."""

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from confide.domain.errors import NotFound
from confide.web.links import render

router = APIRouter(include_in_schema=False)
_NAME = re.compile(r"[0-9T]{15,30}-[0-9a-f]{8}\.eml")
_URL = re.compile(r"https?://[^\s<>\"']+")


def _folder(request: Request) -> Path:
    return Path(request.app.state.runtime.settings.mail_dir)


def _read(path: Path) -> EmailMessage:
    msg = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


@router.get("/dev/mailbox")
def mailbox(request: Request) -> HTMLResponse:
    folder = _folder(request)
    names = (
        sorted((p.name for p in folder.glob("*.eml")), reverse=True)[:200]
        if folder.exists()
        else []
    )
    items = []
    for name in names:
        msg = _read(folder / name)
        items.append(
            {"name": name, "to": msg["To"], "subject": msg["Subject"], "date": msg["Date"]}
        )
    return render(request, "mailbox.html", items=items)


@router.get("/dev/mailbox/{name}")
def mail(name: str, request: Request) -> HTMLResponse:
    path = _folder(request) / name
    if not _NAME.fullmatch(name) or not path.is_file():
        raise NotFound("email")
    msg = _read(path)
    part = msg.get_body(preferencelist=("plain",))
    text = part.get_content() if part is not None else ""
    # Text and links as separate pieces: the template escapes both, links become anchors.
    pieces: list[tuple[str, bool]] = []
    at = 0
    for m in _URL.finditer(text):
        pieces += [(text[at : m.start()], False), (m.group(0), True)]
        at = m.end()
    pieces.append((text[at:], False))
    return render(
        request,
        "mail.html",
        to=msg["To"],
        subject=msg["Subject"],
        date=msg["Date"],
        mail_headers=[(k, v) for k, v in msg.items()],
        pieces=pieces,
    )
