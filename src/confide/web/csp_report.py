"""The CSP violation report endpoint (`POST /csp-report`; docs/security.md, "CSP reports").

Every response's Content-Security-Policy names it: `report-uri /csp-report` (the classic
`application/csp-report` body, sent at once by Chromium, Firefox and Safari). It also
takes the Reporting API's `application/reports+json` batches, though the policy does not
ask for them: with `report-to` present Chromium ignores `report-uri`, and its Reporting
API delivered nothing in our browser tests (see web/middleware.py).

Browsers send reports without credentials or CSRF token, so the endpoint takes them
from anyone, and keeps nothing of what they say but two words:

- the violated directive (`script-src-elem`, `img-src` …), and
- the blocked resource's kind: `inline`, `eval`, … or the URL's scheme alone (`https`,
  `data`, `javascript`); never the URL, the document's URL, the source file, nor the
  `script-sample`, which can hold what a person wrote.

Each report is one WARNING line of the `confide.csp` logger: `csp violation:
directive=script-src-elem blocked=inline`. Bodies over `MAX_BODY` bytes get 413 and
other content types 415; at most `MAX_PER_MINUTE` lines a minute are written per
process (the rest are counted and summed up in one line), so a flood of reports cannot
flood the log. The answer is always an empty 204 (or the error), never an echo.
"""

import json
import logging
import re
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

log = logging.getLogger("confide.csp")
router = APIRouter(include_in_schema=False)

PATH = "/csp-report"
MAX_BODY = 16 * 1024
MAX_PER_MINUTE = 60
CONTENT_TYPES = ("application/csp-report", "application/reports+json", "application/json")
_DIRECTIVE = re.compile(r"[a-z][a-z-]{0,39}")
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]{0,19}):")
# What browsers put in place of a URL (Chromium says "data" and "blob" for such URLs).
_KEYWORDS = {
    "inline",
    "eval",
    "wasm-eval",
    "trusted-types-policy",
    "trusted-types-sink",
    "self",
    "data",
    "blob",
}


class _Budget:
    """At most `MAX_PER_MINUTE` logged reports per minute in this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window = 0
        self.used = 0
        self.dropped = 0

    def take(self) -> tuple[bool, int]:
        """(may log, reports dropped in the previous minute to mention now)."""
        with self.lock:
            window = int(time.monotonic() // 60)
            dropped = 0
            if window != self.window:
                self.window, self.used, dropped, self.dropped = window, 0, self.dropped, 0
            if self.used >= MAX_PER_MINUTE:
                self.dropped += 1
                return False, dropped
            self.used += 1
            return True, dropped


_budget = _Budget()


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def directive_of(report: dict[str, Any]) -> str:
    raw = report.get("effective-directive") or report.get("effectiveDirective")
    raw = raw or report.get("violated-directive") or report.get("violatedDirective") or ""
    word = str(raw).strip().lower().split(" ", 1)[0]
    return word if _DIRECTIVE.fullmatch(word) else "other"


def blocked_kind(report: dict[str, Any]) -> str:
    raw = report.get("blocked-uri") or report.get("blockedURL") or ""
    value = str(raw).strip().lower()
    if value in _KEYWORDS:
        return value
    m = _SCHEME.match(value)
    return m.group(1) if m else ("none" if not value else "other")


def _reports(body: Any) -> list[dict[str, Any]]:
    """The violation objects of either format; anything else: none."""
    if isinstance(body, dict) and isinstance(body.get("csp-report"), dict):
        return [body["csp-report"]]
    if isinstance(body, list):
        return [
            r["body"]
            for r in body[:20]
            if isinstance(r, dict)
            and r.get("type") == "csp-violation"
            and isinstance(r.get("body"), dict)
        ]
    return []


@router.post(PATH)
async def csp_report(request: Request) -> Response:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in CONTENT_TYPES:
        return _error(415, "unsupported_media_type", "Send a CSP report.")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return _error(413, "body_too_large", f"A report is at most {MAX_BODY} bytes.")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            return _error(413, "body_too_large", f"A report is at most {MAX_BODY} bytes.")
    try:
        body = json.loads(raw)
    except ValueError:
        return _error(400, "malformed_report", "The report is not JSON.")
    for report in _reports(body):
        may_log, dropped = _budget.take()
        if dropped:
            log.warning(
                "csp violation: %d reports not logged (over %d a minute)", dropped, MAX_PER_MINUTE
            )
        if may_log:
            log.warning(
                "csp violation: directive=%s blocked=%s",
                directive_of(report),
                blocked_kind(report),
            )
    return Response(status_code=204)
