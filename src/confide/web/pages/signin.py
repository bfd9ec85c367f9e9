"""`/`, sign-in and sign-out pages (team members: email + password, services/sessions.py).

A member with a second factor (PA4) gets the code step after the password: the pending
step's own cookie (api/auth.py) and a code form posting to `/signin/code`, which makes
the session. `signin.html` keeps a `client_signin` block for the portal's links.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from confide.domain.actors import PartyKind
from confide.domain.errors import DomainError, NotAuthenticated
from confide.domain.signin import SecondFactorRequired
from confide.services import second_factor, sessions
from confide.web import csrf
from confide.web.api.auth import set_session_cookie, set_signin_cookie
from confide.web.deps import (
    RuntimeDep,
    _same_origin,
    client_ip,
    current_actor,
    forget_session_cookie,
    session_cookie_name,
    signin_cookie_name,
)
from confide.web.pages.common import (
    CLEAR_SITE_DATA,
    Csrf,
    PageActor,
    go,
    had_session,
    render,
)

router = APIRouter(include_in_schema=False)


def home_of(kind: PartyKind) -> str:
    return "/messages" if kind is PartyKind.MEMBER else "/portal"


@router.get("/")
def root(request: Request, runtime: RuntimeDep) -> Response:
    """Leads a person to their Messages, or to the sign-in page."""
    try:
        actor = current_actor(request, runtime)
    except DomainError:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse(home_of(actor.party.kind), status_code=303)


OIDC_FAILED = "That sign-in did not work. Try again, or use another way."


def signin_form(request: Request, status: int = 200, /, **ctx: object) -> Response:
    """The sign-in page, with "Sign in with …" when an OIDC provider is configured (PA3:
    the button opens `/api/v1/auth/oidc/start`)."""
    client = getattr(request.app.state, "oidc", None)
    request.state.csrf_before_sign_in = True  # its forms post before any session
    ctx.setdefault("email", "")
    ctx.setdefault("error", "")
    name = client.config.display_name if client else ""
    return render(request, "signin.html", status, oidc_name=name, **ctx)


@router.get("/signin")
def signin_page(request: Request, runtime: RuntimeDep) -> Response:
    try:
        actor = current_actor(request, runtime)
    except DomainError:
        failed = request.query_params.get("oidc") == "failed"  # the callback's refusal
        response = signin_form(request, error=OIDC_FAILED if failed else "")
        if had_session(request):
            # Here after the session ended (the page's socket closed with 4401, PA5):
            # nothing of it stays in the browser, and the dead cookie goes.
            response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
            response.delete_cookie(
                session_cookie_name(runtime),
                path="/",
                secure=runtime.settings.secure_cookies,
                httponly=True,
            )
        return response
    return RedirectResponse(home_of(actor.party.kind), status_code=303)


@router.get("/signin/code")
def signin_code_page(request: Request, runtime: RuntimeDep) -> Response:
    """The code step's page, where the OIDC callback sends a member with a second
    factor (PA4). Its pending-step cookie is SameSite=Strict, so it is not sent on
    this navigation (it follows the provider's cross-site redirect): the form's own
    POST, from this page, carries it."""
    try:
        actor = current_actor(request, runtime)
    except DomainError:
        return signin_form(request, second_step=True)
    return RedirectResponse(home_of(actor.party.kind), status_code=303)


@router.post("/signin", dependencies=[Depends(csrf.require_csrf_before_sign_in)])
def signin(
    request: Request,
    runtime: RuntimeDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    if not _same_origin(request, runtime):
        return signin_form(request, 403, error="Reload the page and try again.")
    try:
        with runtime.write() as uow:
            session_id, actor = sessions.sign_in_with_password(
                uow,
                runtime.passwords,
                email=email,
                password=password,
                ip=client_ip(request),
                policy=runtime.session_policy,  # the configured limits, as the API's
            )
    except SecondFactorRequired as pending:
        response = signin_form(request, email=email, second_step=True)
        set_signin_cookie(response, runtime, pending.challenge_token)
        return response
    except DomainError as exc:
        return signin_form(request, 400, email=email, error=exc.message)
    response = RedirectResponse(home_of(actor.party.kind), status_code=303)
    set_session_cookie(response, runtime, session_id)
    return response


@router.post("/signin/code", dependencies=[Depends(csrf.require_csrf_before_sign_in)])
def signin_code(
    request: Request,
    runtime: RuntimeDep,
    code: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The second step (PA4): a code from the authenticator app, or a recovery code."""
    if not _same_origin(request, runtime):
        return signin_form(request, 403, error="Reload the page and try again.")
    token = request.cookies.get(signin_cookie_name(runtime), "")
    if not token or len(token) > 200:
        return signin_form(request, 400, error=TIMED_OUT)
    try:
        with runtime.write() as uow:
            session_id, actor = second_factor.complete_sign_in(
                uow, runtime.session_policy, challenge_token=token, code=code, ip=client_ip(request)
            )
    except NotAuthenticated:
        return signin_form(request, 400, error=TIMED_OUT)
    except DomainError as exc:
        return signin_form(request, 400, error=exc.message, second_step=True)
    response = RedirectResponse(home_of(actor.party.kind), status_code=303)
    set_session_cookie(response, runtime, session_id)
    return response


TIMED_OUT = "That sign-in has timed out. Sign in again."


@router.post("/signout", dependencies=[Csrf])
def signout(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    session_id = getattr(request.state, "session_id", None)
    if session_id is None:
        raise NotAuthenticated()
    with runtime.write() as uow:
        sessions.sign_out(uow, actor, session_id)
    response = go(request, "/signin")
    response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    forget_session_cookie(response, runtime)
    return response
