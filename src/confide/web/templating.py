"""The one Jinja2 environment of the web pages (autoescape on, StrictUndefined).

Every page is rendered here. Text a person wrote (messages, names, away text) is only
ever inserted through autoescaped expressions or the `linkify` filter below, which
escapes first and then adds anchors for http(s) links only (MS4). No template marks
user text `|safe`.
"""

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from confide.web import csrf

TEMPLATES = Path(__file__).parent / "templates"

# http(s) only: `javascript:`, `data:` and friends stay plain text. A link ends at
# whitespace or at characters that commonly close a sentence.
_LINK = re.compile(r"\bhttps?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


def linkify(text: str | None) -> Markup:
    """Plain text → HTML: escaped, with http(s) URLs as anchors that open in a new
    browsing context without a Referer or an opener (MS4)."""
    if not text:
        return Markup("")
    out: list[str] = []
    pos = 0
    for m in _LINK.finditer(text):
        url = m.group()
        trail = ""
        while url and url[-1] in _TRAILING:
            trail = url[-1] + trail
            url = url[:-1]
        if len(url) < len("http://x"):
            continue
        out.append(str(escape(text[pos : m.start()])))
        out.append(
            f'<a href="{escape(url)}" rel="noopener noreferrer nofollow" '
            f'target="_blank">{escape(url)}</a>{escape(trail)}'
        )
        pos = m.end()
    out.append(str(escape(text[pos:])))
    return Markup("".join(out))  # noqa: S704  # nosec B704 - every piece above is escaped


def when(value: datetime | None) -> str:
    """A short UTC time for a message (the page script shows it in local time)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


# Pages send `same-origin` instead of the API's `no-referrer`: with `no-referrer` a
# browser sends `Origin: null` on a page's own POSTs, which the Origin check (kept on
# top of the CSRF token) must refuse. Page URLs carry no tokens (PA7), and nothing is
# sent to other origins.
PAGE_HEADERS = {"Referrer-Policy": "same-origin"}


def _build() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["linkify"] = linkify
    env.filters["when"] = when
    env.filters["iso"] = iso
    return env


env = _build()


def render(request: Request, name: str, status_code: int = 200, /, **context: Any) -> HTMLResponse:
    """Render a template with the request globals every page needs: the CSRF token
    (`csrf_token`, `csrf_input()`), the request itself, and `static()` URLs."""
    token = csrf.token_for(request)

    def csrf_input() -> Markup:
        html = f'<input type="hidden" name="{csrf.FORM_FIELD}" value="{escape(token)}">'
        return Markup(html)  # noqa: S704  # nosec B704 - our HMAC hex, escaped anyway

    context.setdefault("actor_nav", None)
    html = env.get_template(name).render(
        request=request, csrf_token=token, csrf_input=csrf_input, **context
    )
    response = HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
    csrf.ensure_cookie(request, response)
    return response


def render_without_session(
    request: Request,
    name: str,
    status_code: int = 200,
    /,
    *,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Pages outside any session, on the app's layout: the emailed links' landing pages
    and the demo mailbox (web/links.py). No CSRF token and no pre-session cookie (the
    landing pages carry their own pre-auth cookie; a mail scanner's GET gets nothing
    else of ours), so two answers to the same request are byte-identical."""

    def csrf_input() -> Markup:
        return Markup("")

    context.setdefault("actor_nav", None)
    html = env.get_template(name).render(
        request=request, csrf_token="", csrf_input=csrf_input, **context
    )
    return HTMLResponse(html, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})
