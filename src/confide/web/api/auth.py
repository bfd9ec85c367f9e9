"""Sign-in and API tokens (the authentication seam; see services/sessions.py)."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from confide.domain.actors import PartyKind
from confide.domain.errors import NotFound
from confide.domain.signin import CHALLENGE_TTL, SecondFactorRequired
from confide.runtime import Runtime
from confide.services import sessions
from confide.services.access import acting_client_side, acting_member
from confide.web.api.schemas import ApiTokenIn, ApiTokenOut, LoginIn, MeOut, PathId
from confide.web.deps import (
    CurrentActor,
    EnrollingActor,
    RuntimeDep,
    SigningOutActor,
    client_ip,
    forget_session_cookie,
    session_cookie_name,
    signin_cookie_name,
)

router = APIRouter(tags=["auth"])


def set_session_cookie(response: Response, runtime: Runtime, session_id: str) -> None:
    response.set_cookie(
        session_cookie_name(runtime),
        session_id,
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="lax",
        path="/",
    )
    # A finished sign-in leaves no pending step behind.
    response.delete_cookie(
        signin_cookie_name(runtime), path="/", secure=runtime.settings.secure_cookies
    )


def second_step_response(runtime: Runtime, challenge_token: str) -> Response:
    """200 `{"second_factor_required": true}` and the pending step's own cookie."""
    response = JSONResponse({"second_factor_required": True}, status_code=200)
    set_signin_cookie(response, runtime, challenge_token)
    return response


def set_signin_cookie(response: Response, runtime: Runtime, challenge_token: str) -> None:
    """The pending step's own cookie (HttpOnly, 5 minutes): it is not a session and
    opens nothing but the second step."""
    response.set_cookie(
        signin_cookie_name(runtime),
        challenge_token,
        max_age=int(CHALLENGE_TTL.total_seconds()),
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="strict",
        path="/",
    )


@router.post(
    "/auth/login",
    status_code=204,
    response_class=Response,
    responses={200: {"description": "Password accepted; a second-factor code is needed"}},
)
def login(body: LoginIn, request: Request, runtime: RuntimeDep) -> Response:
    """Team members: email + password. Sets the session cookie (204), or, for a member
    with a second factor, answers 200 `{"second_factor_required": true}` with a pending
    step cookie; `POST /auth/login/second-factor` finishes. Too many failures: 429."""
    with runtime.write() as uow:
        try:
            session_id, _actor = sessions.sign_in_with_password(
                uow,
                runtime.passwords,
                email=body.email,
                password=body.password,
                ip=client_ip(request),
                policy=runtime.session_policy,
            )
        except SecondFactorRequired as pending:
            return second_step_response(runtime, pending.challenge_token)
        response = Response(status_code=204)
        set_session_cookie(response, runtime, session_id)
        return response


@router.post("/auth/logout-everywhere", status_code=204, response_class=Response)
def logout_everywhere(actor: EnrollingActor, runtime: RuntimeDep) -> Response:
    """PA5: end every session of the signed-in person, on every device (this one too);
    their open sockets close. A team member's personal API tokens are revoked too."""
    with runtime.write() as uow:
        sessions.sign_out_everywhere(uow, actor)
        response = Response(status_code=204)
        forget_session_cookie(response, runtime)
        return response


@router.post("/auth/logout", status_code=204, response_class=Response)
def logout(actor: SigningOutActor, request: Request, runtime: RuntimeDep) -> Response:
    """Ends this session (a portal link's session and a member who must still enroll a
    second factor may sign out too)."""
    with runtime.write() as uow:
        session_id = getattr(request.state, "session_id", None)
        if session_id:
            sessions.sign_out(uow, actor, session_id)
        response = Response(status_code=204)
        forget_session_cookie(response, runtime)
        return response


@router.get("/me")
def me(actor: EnrollingActor, runtime: RuntimeDep) -> MeOut:
    with runtime.read() as uow:
        if actor.party.kind is PartyKind.MEMBER:
            m = acting_member(uow, actor).member
            return MeOut(
                kind="member",
                id=m.id,
                practice_id=m.practice_id,
                name=m.name,
                roles=sorted(m.roles),
                access_level=m.access_level,
                away=m.away_on,
                away_text=m.away_text,
            )
        client, contact = acting_client_side(uow, actor)
        who = contact if contact is not None else client
        return MeOut(
            kind=actor.party.kind.value,
            id=who.id,
            practice_id=who.practice_id,
            name=who.name,
        )


@router.post("/tokens", status_code=201)
def create_token(body: ApiTokenIn, actor: CurrentActor, runtime: RuntimeDep) -> ApiTokenOut:
    """A personal API token for the signed-in member. Shown once; stored hashed."""
    with runtime.write() as uow:
        token_id, token = sessions.create_api_token(uow, actor, name=body.name)
        return ApiTokenOut(id=token_id, token=token)


@router.delete("/tokens/{token_id}", status_code=204, response_class=Response)
def revoke_token(token_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> Response:
    with runtime.write() as uow:
        if not sessions.revoke_api_token(uow, actor, token_id):
            raise NotFound("token")
        return Response(status_code=204)
