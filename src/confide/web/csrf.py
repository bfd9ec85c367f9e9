"""CSRF protection for the pages (docs/security.md, "CSRF").

A synchronizer token tied to the session: `HMAC-SHA256(k, "s:" + session id)`, where
`k` is derived from the master key (HKDF, its own label), so every `serve` process
computes the same token and nobody without the key can. Before sign-in (the sign-in
form itself: login CSRF) the token is bound the same way to a random pre-session cookie
(`__Host-confide_csrf`, HttpOnly, SameSite=Strict).

Pages put the token in `<body hx-headers>` (htmx sends it as `X-CSRF-Token`) and in a
hidden `csrf_token` field of plain forms (`csrf_input()`); every state-changing page
request is checked, on top of the Origin check of `deps.current_actor`.
"""

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import Request, Response

from confide.domain.errors import Forbidden
from confide.runtime import Runtime, master_key
from confide.web.deps import UNSAFE_METHODS, session_cookie_name

HEADER = "x-csrf-token"
FORM_FIELD = "csrf_token"
_ANON_BYTES = 32


def derive_key(runtime: Runtime) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"confide csrf v1").derive(
        master_key(runtime.settings)
    )


def anon_cookie_name(runtime: Runtime) -> str:
    return "__Host-confide_csrf" if runtime.settings.secure_cookies else "confide_csrf"


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _mac(request: Request, label: str, value: str) -> str:
    key: bytes = request.app.state.csrf_key
    return hmac.new(key, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()


def _anon_value(request: Request) -> str:
    runtime = _runtime(request)
    value = request.cookies.get(anon_cookie_name(runtime), "")
    if not value or len(value) > 100:
        value = getattr(request.state, "new_csrf_cookie", "") or secrets.token_urlsafe(_ANON_BYTES)
        request.state.new_csrf_cookie = value
    return value


def token_for(request: Request) -> str:
    """The token a page embeds: bound to the session when there is one. The sign-in
    page's forms are checked before any session (`require_csrf_before_sign_in`), so
    they always get the pre-session token, even when the browser still holds the
    cookie of a session that ended (it timed out while the page was open)."""
    session_id = request.cookies.get(session_cookie_name(_runtime(request)), "")
    before_sign_in = getattr(request.state, "csrf_before_sign_in", False)
    if session_id and len(session_id) <= 200 and not before_sign_in:
        return _mac(request, "s", session_id)
    return _mac(request, "a", _anon_value(request))


def ensure_cookie(request: Request, response: Response) -> None:
    """Set the pre-session cookie when `token_for` had to make one."""
    value = getattr(request.state, "new_csrf_cookie", "")
    if value:
        runtime = _runtime(request)
        response.set_cookie(
            anon_cookie_name(runtime),
            value,
            httponly=True,
            secure=runtime.settings.secure_cookies,
            samesite="strict",
            path="/",
        )


async def _submitted(request: Request) -> str:
    token = request.headers.get(HEADER, "")
    if token:
        return token
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # cached: the route's Form() parameters reuse it
        value = form.get(FORM_FIELD, "")
        return value if isinstance(value, str) else ""
    return ""


def _refuse() -> Forbidden:
    return Forbidden(
        "csrf_failed", "This form has expired or did not come from Confide. Reload the page."
    )


async def require_csrf(request: Request) -> None:
    """Dependency of every state-changing page route of a signed-in person."""
    if request.method not in UNSAFE_METHODS:
        return
    session_id = request.cookies.get(session_cookie_name(_runtime(request)), "")
    submitted = await _submitted(request)
    if not session_id or len(session_id) > 200 or not submitted:
        raise _refuse()
    if not hmac.compare_digest(submitted, _mac(request, "s", session_id)):
        raise _refuse()


async def require_csrf_before_sign_in(request: Request) -> None:
    """Dependency of the sign-in form: bound to the pre-session cookie."""
    value = request.cookies.get(anon_cookie_name(_runtime(request)), "")
    submitted = await _submitted(request)
    if not value or len(value) > 100 or not submitted:
        raise _refuse()
    if not hmac.compare_digest(submitted, _mac(request, "a", value)):
        raise _refuse()
