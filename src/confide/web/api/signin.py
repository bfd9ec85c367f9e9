"""The second factor, the second sign-in step, practice security settings and ending a
member's sessions (issue 5: PA4, PA5). Services: second_factor, security_settings,
sessions."""

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, StringConstraints

from confide.domain.errors import NotAuthenticated
from confide.domain.signin import SecuritySettings
from confide.services import second_factor, security_settings, sessions
from confide.web.api.auth import set_session_cookie
from confide.web.api.schemas import In, PathId
from confide.web.deps import (
    CurrentActor,
    EnrollingActor,
    RuntimeDep,
    client_ip,
    signin_cookie_name,
)

router = APIRouter(tags=["sign-in"])

Code = Annotated[str, StringConstraints(max_length=100)]
Password = Annotated[str, StringConstraints(max_length=1000)]


class CodeIn(In):
    code: Code


class ReauthIn(In):
    password: Password
    code: Code


class SecondFactorOut(BaseModel):
    enrolled: bool
    enrollment_pending: bool
    recovery_codes_left: int
    required_by_practice: bool


class EnrollmentOut(BaseModel):
    secret: str
    otpauth_uri: str
    qr_svg: str


class RecoveryCodesOut(BaseModel):
    recovery_codes: list[str]


class SecurityOut(BaseModel):
    require_second_factor: bool
    session_idle_minutes: int
    members_may_use_oidc: bool


class SecurityIn(In):
    require_second_factor: bool | None = None
    session_idle_minutes: int | None = Field(default=None, ge=-(2**31), le=2**31)
    members_may_use_oidc: bool | None = None


class EndedOut(BaseModel):
    ended: int


@router.post("/auth/login/second-factor", status_code=204, response_class=Response)
def login_second_factor(body: CodeIn, request: Request, runtime: RuntimeDep) -> Response:
    """The second step of a two-step sign-in: a code from the authenticator app (or a
    recovery code) with the pending step's cookie → a new session cookie (204). No or
    an expired pending step: 401 (sign in again)."""
    token = request.cookies.get(signin_cookie_name(runtime), "")
    if not token or len(token) > 200:
        raise NotAuthenticated()
    with runtime.write() as uow:
        session_id, _actor = second_factor.complete_sign_in(
            uow,
            runtime.session_policy,
            challenge_token=token,
            code=body.code,
            ip=client_ip(request),
        )
        response = Response(status_code=204)
        set_session_cookie(response, runtime, session_id)
        return response


@router.get("/me/second-factor")
def second_factor_status(actor: EnrollingActor, runtime: RuntimeDep) -> SecondFactorOut:
    with runtime.read() as uow:
        s = second_factor.get_status(uow, actor)
        return SecondFactorOut(
            enrolled=s.enrolled,
            enrollment_pending=s.enrollment_pending,
            recovery_codes_left=s.recovery_codes_left,
            required_by_practice=s.required_by_practice,
        )


@router.post("/me/second-factor/enrollment", status_code=201)
def begin_enrollment(actor: EnrollingActor, runtime: RuntimeDep) -> EnrollmentOut:
    """A new TOTP secret (text, otpauth URI and an SVG QR code), unconfirmed until
    `POST /me/second-factor/confirm` gets a code from it."""
    with runtime.write() as uow:
        e = second_factor.begin_enrollment(uow, actor)
        return EnrollmentOut(secret=e.secret, otpauth_uri=e.otpauth_uri, qr_svg=e.qr_svg)


@router.post("/me/second-factor/confirm")
def confirm_enrollment(
    body: CodeIn, actor: EnrollingActor, runtime: RuntimeDep
) -> RecoveryCodesOut:
    """Turns the second factor on; answers the 10 recovery codes, shown this once."""
    with runtime.write() as uow:
        codes = second_factor.confirm_enrollment(uow, actor, code=body.code)
        return RecoveryCodesOut(recovery_codes=codes)


@router.post("/me/second-factor/disable", status_code=204, response_class=Response)
def disable_second_factor(body: ReauthIn, actor: CurrentActor, runtime: RuntimeDep) -> Response:
    """Removes the second factor: the password and a code again."""
    with runtime.write() as uow:
        second_factor.disable(
            uow,
            actor,
            runtime.passwords,
            runtime.session_policy,
            password=body.password,
            code=body.code,
        )
        return Response(status_code=204)


@router.post("/me/second-factor/recovery-codes")
def new_recovery_codes(
    body: ReauthIn, actor: CurrentActor, runtime: RuntimeDep
) -> RecoveryCodesOut:
    """10 new recovery codes (the password and a code again); the old ones stop working."""
    with runtime.write() as uow:
        codes = second_factor.regenerate_recovery_codes(
            uow,
            actor,
            runtime.passwords,
            runtime.session_policy,
            password=body.password,
            code=body.code,
        )
        return RecoveryCodesOut(recovery_codes=codes)


def _security_out(s: SecuritySettings) -> SecurityOut:
    return SecurityOut(
        require_second_factor=s.require_second_factor,
        session_idle_minutes=s.session_idle_minutes,
        members_may_use_oidc=s.members_may_use_oidc,
    )


@router.get("/practice/security")
def get_security(actor: EnrollingActor, runtime: RuntimeDep) -> SecurityOut:
    with runtime.read() as uow:
        return _security_out(security_settings.get_security_settings(uow, actor))


@router.patch("/practice/security")
def set_security(body: SecurityIn, actor: CurrentActor, runtime: RuntimeDep) -> SecurityOut:
    """PA4: `require_second_factor` and `members_may_use_oidc` (the account owner);
    PA5: `session_idle_minutes`, 5 to 60 (whoever changes practice settings)."""
    with runtime.write() as uow:
        return _security_out(
            security_settings.set_security_settings(
                uow,
                actor,
                require_second_factor=body.require_second_factor,
                session_idle_minutes=body.session_idle_minutes,
                members_may_use_oidc=body.members_may_use_oidc,
            )
        )


@router.post("/members/{member_id}/end-sessions")
def end_member_sessions(member_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> EndedOut:
    """PA5: the account owner ends every session of a team member; their sockets close."""
    with runtime.write() as uow:
        return EndedOut(ended=sessions.end_member_sessions(uow, actor, member_id))


@router.post("/members/{member_id}/second-factor/reset", status_code=204, response_class=Response)
def reset_member_second_factor(
    member_id: PathId, actor: CurrentActor, runtime: RuntimeDep
) -> Response:
    """PA4 recovery for a member who lost both the authenticator and the recovery codes:
    the account owner (or a practice manager, for anyone but the account owner) removes
    their second factor and ends their sessions. 409 when they have none."""
    with runtime.write() as uow:
        second_factor.reset_for_member(uow, actor, member_id)
        return Response(status_code=204)
