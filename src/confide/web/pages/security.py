"""Settings > Security (PA4, PA5): one's own second factor (set up with a QR code and
the secret as text, confirm with a code, recovery codes shown once; new recovery codes
and turning it off need the password and a code), "sign out everywhere", and for those
allowed the practice's sign-in settings. Settings > Team: the account owner and
practice managers reset the second factor of a member who lost both the authenticator
and the recovery codes.

The services are the API's (services/second_factor.py, sessions.py,
security_settings.py); these routes only render. A member who must still enroll
(the practice requires a second factor) reaches this page and nothing else: every
other page sends them here (common.page_error).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from markupsafe import Markup

from confide.domain import policy, signin
from confide.domain.actors import Actor
from confide.domain.errors import DomainError
from confide.services import second_factor, security_settings, sessions
from confide.services.access import acting_member
from confide.web.api import oidc as oidc_api
from confide.web.api.schemas import PathId
from confide.web.deps import RuntimeDep, enrolling_actor, forget_session_cookie
from confide.web.pages.common import (
    CLEAR_SITE_DATA,
    Csrf,
    PageActor,
    go,
    member_nav,
    render,
)

router = APIRouter(include_in_schema=False)
# The security page and the enrollment steps: also for a member who must enroll first.
EnrollingPageActor = Annotated[Actor, Depends(enrolling_actor)]
Code = Annotated[str, Form(max_length=100)]
Password = Annotated[str, Form(max_length=1024)]

SAVED = {
    "off": "Your second factor is turned off.",
    "practice": "Saved.",
}


def _page(
    request: Request,
    actor: Actor,
    runtime: RuntimeDep,
    status_code: int = 200,
    *,
    error: str = "",
    error_form: str = "",
    oidc_continue: str = "",
) -> Response:
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
        me = acting_member(uow, actor).member
        status = second_factor.get_status(uow, actor)
        pending = second_factor.pending_enrollment(uow, actor)
        practice = security_settings.get_security_settings(uow, actor)
        must_enroll = sessions.must_enroll(uow, actor)
    oidc = getattr(request.app.state, "oidc", None)
    qr = None
    if pending is not None:
        # segno's SVG: path data and presentation attributes only, no style, no script
        # (CSP without 'unsafe-inline' holds); made on the server from our own URI.
        qr = Markup(pending.qr_svg)  # noqa: S704  # nosec B704
    return render(
        request,
        "settings_security.html",
        status_code,
        nav=nav,
        active="settings",
        section="security",
        status=status,
        pending=pending,
        qr=qr,
        # Groups of 4 for typing by hand (authenticator apps ignore the spaces).
        secret_groups=" ".join(pending.secret[i : i + 4] for i in range(0, len(pending.secret), 4))
        if pending
        else "",
        practice=practice,
        must_enroll=must_enroll,
        may_require=bool(signin.may_change_security_settings(me)),
        may_idle=bool(policy.may_change_practice_settings(me)),
        idle_min=signin.IDLE_MINUTES_MIN,
        idle_max=signin.IDLE_MINUTES_MAX,
        saved=SAVED.get(request.query_params.get("saved", ""), ""),
        error=error,
        error_form=error_form,
        # PA3 for the team: the provider's name when configured and the practice allows it.
        oidc_name=oidc.config.display_name if oidc else "",
        members_may_use_oidc=practice.members_may_use_oidc,
        oidc_continue=oidc_continue,
    )


def _codes(request: Request, actor: Actor, runtime: RuntimeDep, codes: list[str]) -> Response:
    """The recovery codes, shown this once (the answer of the POST itself: no URL to
    come back to; `Cache-Control: no-store` like every page)."""
    with runtime.read() as uow:
        nav = member_nav(uow, actor)
    return render(
        request,
        "settings_recovery_codes.html",
        nav=nav,
        active="settings",
        section="security",
        codes=codes,
    )


@router.get("/settings/security")
def security_page(request: Request, actor: EnrollingPageActor, runtime: RuntimeDep) -> Response:
    return _page(request, actor, runtime)


@router.post("/settings/security/enroll", dependencies=[Csrf])
def begin_enrollment(request: Request, actor: EnrollingPageActor, runtime: RuntimeDep) -> Response:
    """A new secret; the page then shows it (QR code and text) until it is confirmed."""
    with runtime.write() as uow:
        second_factor.begin_enrollment(uow, actor)
    return go(request, "/settings/security")


@router.post("/settings/security/confirm", dependencies=[Csrf])
def confirm_enrollment(
    request: Request, actor: EnrollingPageActor, runtime: RuntimeDep, code: Code = ""
) -> Response:
    try:
        with runtime.write() as uow:
            codes = second_factor.confirm_enrollment(uow, actor, code=code)
    except DomainError as exc:
        return _page(request, actor, runtime, exc.status, error=exc.message, error_form="confirm")
    return _codes(request, actor, runtime, codes)


@router.post("/settings/security/recovery-codes", dependencies=[Csrf])
def new_recovery_codes(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    password: Password = "",
    code: Code = "",
) -> Response:
    try:
        with runtime.write() as uow:
            codes = second_factor.regenerate_recovery_codes(
                uow,
                actor,
                runtime.passwords,
                runtime.session_policy,
                password=password,
                code=code,
            )
    except DomainError as exc:
        return _page(request, actor, runtime, exc.status, error=exc.message, error_form="codes")
    return _codes(request, actor, runtime, codes)


@router.post("/settings/security/disable", dependencies=[Csrf])
def disable(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    password: Password = "",
    code: Code = "",
) -> Response:
    try:
        with runtime.write() as uow:
            second_factor.disable(
                uow,
                actor,
                runtime.passwords,
                runtime.session_policy,
                password=password,
                code=code,
            )
    except DomainError as exc:
        return _page(request, actor, runtime, exc.status, error=exc.message, error_form="disable")
    return go(request, "/settings/security?saved=off")


@router.post("/settings/security/practice", dependencies=[Csrf])
def set_practice_security(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    require_second_factor: Annotated[str, Form(max_length=5)] = "",
    require_shown: Annotated[str, Form(max_length=1)] = "",
    members_may_use_oidc: Annotated[str, Form(max_length=5)] = "",
    oidc_shown: Annotated[str, Form(max_length=1)] = "",
    session_idle_minutes: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """PA4 (the account owner: require a second factor) and PA5 (settings editors: the
    idle timeout). A field the form did not show is left as it is (`require_shown`
    says the checkbox was on the form: an unticked box sends nothing)."""
    idle = None
    if session_idle_minutes:
        # Not a number: 0, which the service refuses with its clear 422.
        idle = int(session_idle_minutes) if session_idle_minutes.isdigit() else 0
    require = (require_second_factor == "on") if require_shown == "1" else None
    oidc = (members_may_use_oidc == "on") if oidc_shown == "1" else None
    try:
        with runtime.write() as uow:
            security_settings.set_security_settings(
                uow,
                actor,
                require_second_factor=require,
                session_idle_minutes=idle,
                members_may_use_oidc=oidc,
            )
    except DomainError as exc:
        return _page(request, actor, runtime, exc.status, error=exc.message, error_form="practice")
    return go(request, "/settings/security?saved=practice")


@router.post("/settings/security/oidc-link", dependencies=[Csrf])
def link_oidc_account(request: Request, actor: PageActor, runtime: RuntimeDep) -> Response:
    """PA3 for team members, where the practice allows it: starts linking one's own
    account at the provider. The answer is the page with a "Continue" link to the
    provider (a form's redirect to another origin would break `form-action 'self'`)."""
    cookies = Response()  # collects the pre-auth cookie
    url = oidc_api.begin_link(request, runtime, actor, cookies)
    page = _page(request, actor, runtime, oidc_continue=url)
    for value in cookies.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", value)
    return page


@router.post("/settings/security/sign-out-everywhere", dependencies=[Csrf])
def sign_out_everywhere(
    request: Request, actor: EnrollingPageActor, runtime: RuntimeDep
) -> Response:
    """PA5: every session of mine ends, on every device (this one too), and my personal
    API tokens are revoked."""
    with runtime.write() as uow:
        acting_member(uow, actor)  # a team member's page: clients have none (404)
        sessions.sign_out_everywhere(uow, actor)
    response = go(request, "/signin")
    response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    forget_session_cookie(response, runtime)
    return response


@router.post("/settings/team/{member_id}/second-factor/reset", dependencies=[Csrf])
def reset_member_second_factor(
    request: Request, member_id: PathId, actor: PageActor, runtime: RuntimeDep
) -> Response:
    """PA4 recovery: the account owner or a practice manager removes a member's second
    factor (lost authenticator and recovery codes) and ends their sessions."""
    with runtime.write() as uow:
        second_factor.reset_for_member(uow, actor, member_id)
    return go(request, "/settings/team?saved=1")
