"""The landing pages of emailed links (PA1, PA2, PA6, PA7; password reset).

    /l/m/{token}   the notification's portal link: "View message"
    /l/s/{token}   instant sign-in: "Sign in"
    /l/r/{token}   password reset: a new password
    /l/i/{token}   a new team member's invitation: their first password
    /l/sign-in     ask for an instant sign-in link (the same answer for every address)

GET and HEAD change nothing, show no health information and set no session: mail
scanners fetch links. They set only a short-lived pre-auth cookie whose value the
form repeats; the POST needs it, the page's own Origin, and the token, and only then
uses the link and starts the session (login CSRF and session swapping are refused).
After the POST the browser is sent to a clean URL, so the token stays in no address
bar or history entry, and no Referer holds it (`Referrer-Policy: strict-origin` on these
pages: the origin alone, so that the form's POST still carries a real `Origin`).

These pages render on the web app's layout (base.html, app.css; templates/links/) through
`templating.render_without_session`: no CSRF token and no cookie but the pre-auth one,
no navigation, no health information, the app's CSP (no inline script or style).
"""

import secrets
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from confide.domain.errors import DomainError
from confide.runtime import Runtime
from confide.services import email_links
from confide.services.links import LinkRefused, Purpose, peek_link
from confide.web.deps import (
    RuntimeDep,
    client_ip,
    origin_allowed_for_form,
    session_cookie_name,
)
from confide.web.templating import render_without_session

router = APIRouter(include_in_schema=False)

PRE_MAX_AGE = 30 * 60
# Where a redeemed link lands (the portal pages of the web app).
PORTAL_CONVERSATION = "/portal/{conversation_id}"
PORTAL_HOME = "/portal"
SIGN_IN_PAGE = "/"

PAGES = {
    Purpose.PORTAL: ("You have a secure message", "View message"),
    Purpose.INSTANT_SIGN_IN: ("Sign in to your secure messages", "Sign in"),
    Purpose.PASSWORD_RESET: ("Choose a new password", "Set password"),
    Purpose.INVITATION: ("Welcome to Confide: choose your password", "Set password"),
}


def _pre_cookie(request: Request) -> str:
    runtime = request.app.state.runtime
    return "__Host-confide_pre" if runtime.settings.secure_cookies else "confide_pre"


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("error", "")
    context.setdefault("limited", False)
    return render_without_session(
        request,
        f"links/{name}",
        status,
        headers={
            "Cache-Control": "no-store",
            # Not `no-referrer` here: with it, browsers send `Origin: null` on the form
            # POST, and the POST must prove its origin. `strict-origin` sends the origin
            # alone, never the path that holds the token (the page's own stylesheet and
            # scripts are fetched with the origin alone, too).
            "Referrer-Policy": "strict-origin",
        },
        **context,
    )


def _landing(request: Request, purpose: Purpose, token: str) -> HTMLResponse:
    runtime = request.app.state.runtime
    with runtime.read() as uow:
        link = peek_link(uow, token, purpose)
    if link is None:
        return render(request, "expired.html", 410, purpose=purpose.value)
    title, button = PAGES[purpose]
    pre = secrets.token_urlsafe(32)
    response = render(
        request, "landing.html", title=title, button=button, pre=pre, purpose=purpose.value
    )
    response.set_cookie(
        _pre_cookie(request),
        pre,
        max_age=PRE_MAX_AGE,
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="strict",
        path="/",
    )
    return response


async def _checked_form(request: Request) -> dict[str, str] | None:
    """The POST's form if it came from our own page (Origin, pre-auth cookie)."""
    if not origin_allowed_for_form(request, request.app.state.runtime):
        return None
    try:
        form = await request.form()
    except Exception:  # malformed body: refused like a forged one
        return None
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    cookie = request.cookies.get(_pre_cookie(request), "")
    sent = values.get("pre", "")
    if not cookie or not secrets.compare_digest(cookie.encode(), sent.encode()):
        return None
    return values


def _signed_in(request: Request, session_id: str, location: str) -> Response:
    runtime = request.app.state.runtime
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        session_cookie_name(runtime),
        session_id,
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="lax",
        path="/",
    )
    response.delete_cookie(_pre_cookie(request), path="/", secure=runtime.settings.secure_cookies)
    return response


def _refused(request: Request, purpose: Purpose) -> HTMLResponse:
    return render(request, "expired.html", 410, purpose=purpose.value)


def _forged(request: Request, purpose: Purpose) -> HTMLResponse:
    return render(request, "retry.html", 403, purpose=purpose.value)


@router.api_route("/l/m/{token}", methods=["GET", "HEAD"])
def portal_link_page(token: str, request: Request) -> HTMLResponse:
    return _landing(request, Purpose.PORTAL, token)


@router.post("/l/m/{token}")
async def use_portal_link(token: str, request: Request, runtime: RuntimeDep) -> Response:
    if await _checked_form(request) is None:
        return _forged(request, Purpose.PORTAL)

    def redeem() -> email_links.LinkSession:
        with runtime.write() as uow:
            return email_links.redeem_portal_link(uow, token, ip=client_ip(request))

    try:
        done = await _run(redeem)
    except LinkRefused:
        return _refused(request, Purpose.PORTAL)
    location = PORTAL_CONVERSATION.format(conversation_id=done.actor.conversation_scope)
    return _signed_in(request, done.session_id, location)


@router.api_route("/l/s/{token}", methods=["GET", "HEAD"])
def instant_sign_in_page(token: str, request: Request) -> HTMLResponse:
    return _landing(request, Purpose.INSTANT_SIGN_IN, token)


@router.post("/l/s/{token}")
async def use_instant_sign_in(token: str, request: Request, runtime: RuntimeDep) -> Response:
    if await _checked_form(request) is None:
        return _forged(request, Purpose.INSTANT_SIGN_IN)

    def redeem() -> email_links.LinkSession:
        with runtime.write() as uow:
            return email_links.redeem_instant_sign_in(uow, token, ip=client_ip(request))

    try:
        done = await _run(redeem)
    except LinkRefused:
        return _refused(request, Purpose.INSTANT_SIGN_IN)
    return _signed_in(request, done.session_id, PORTAL_HOME)


@router.api_route("/l/r/{token}", methods=["GET", "HEAD"])
def password_reset_page(token: str, request: Request) -> HTMLResponse:
    return _landing(request, Purpose.PASSWORD_RESET, token)


@router.post("/l/r/{token}")
async def use_password_reset(token: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _set_password(token, request, runtime, Purpose.PASSWORD_RESET)


@router.api_route("/l/i/{token}", methods=["GET", "HEAD"])
def invitation_page(token: str, request: Request) -> HTMLResponse:
    return _landing(request, Purpose.INVITATION, token)


@router.post("/l/i/{token}")
async def use_invitation(token: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _set_password(token, request, runtime, Purpose.INVITATION)


async def _set_password(
    token: str, request: Request, runtime: Runtime, purpose: Purpose
) -> Response:
    form = await _checked_form(request)
    if form is None:
        return _forged(request, purpose)
    password = form.get("password", "")
    if password != form.get("confirm", ""):
        return _password_again(request, purpose, "The two passwords are not the same.")

    def redeem() -> None:
        with runtime.write() as uow:
            email_links.redeem_password_reset(
                uow,
                runtime.passwords,
                token,
                password=password,
                ip=client_ip(request),
                purpose=purpose,
            )

    try:
        await _run(redeem)
    except LinkRefused:
        return _refused(request, purpose)
    except DomainError as exc:
        return _password_again(request, purpose, exc.message)
    title = "Password set" if purpose is Purpose.INVITATION else "Password changed"
    response = render(request, "done.html", title=title, sign_in=SIGN_IN_PAGE)
    response.delete_cookie(_pre_cookie(request), path="/", secure=runtime.settings.secure_cookies)
    return response


def _password_again(request: Request, purpose: Purpose, error: str) -> HTMLResponse:
    """The form again, with the error; the link was not used."""
    title, button = PAGES[purpose]
    pre = request.cookies.get(_pre_cookie(request), "")
    return render(
        request,
        "landing.html",
        422,
        title=title,
        button=button,
        pre=pre,
        purpose=purpose.value,
        error=error,
    )


@router.get("/l/sign-in")
def sign_in_request_page(request: Request) -> HTMLResponse:
    return render(request, "request.html", sent=False)


@router.post("/l/sign-in")
async def sign_in_request(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    """PA2 as a form: the same page whatever the address (the link comes by email)."""
    if not origin_allowed_for_form(request, runtime):
        return render(request, "request.html", 403, sent=False)
    try:
        form = await request.form()
        email = str(form.get("email", ""))[:320]
    except Exception:
        email = ""

    def ask() -> None:
        with runtime.write() as uow:
            email_links.request_instant_sign_in(
                uow,
                email=email,
                ip=client_ip(request),
                ip_limit=runtime.settings.link_requests_per_ip,
            )

    try:
        await _run(ask)
    except email_links.RateLimited:
        return render(request, "request.html", 429, sent=False, limited=True)
    return render(request, "request.html", sent=True)


async def _run(fn: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)
