"""Sign-in and API tokens (the authentication seam; see services/sessions.py)."""

from fastapi import APIRouter, Request, Response

from confide.domain.actors import PartyKind
from confide.domain.errors import NotFound
from confide.services import sessions
from confide.services.access import acting_client_side, acting_member
from confide.web.api.schemas import ApiTokenIn, ApiTokenOut, LoginIn, MeOut, PathId
from confide.web.deps import (
    ConversationActor,
    CurrentActor,
    RuntimeDep,
    client_ip,
    session_cookie_name,
)

router = APIRouter(tags=["auth"])


@router.post("/auth/login", status_code=204, response_class=Response)
def login(body: LoginIn, request: Request, runtime: RuntimeDep) -> Response:
    """Team members: email + password. Sets the session cookie."""
    with runtime.write() as uow:
        session_id, _actor = sessions.sign_in_with_password(
            uow, runtime.passwords, email=body.email, password=body.password, ip=client_ip(request)
        )
        response = Response(status_code=204)
        response.set_cookie(
            session_cookie_name(runtime),
            session_id,
            httponly=True,
            secure=runtime.settings.secure_cookies,
            samesite="lax",
            path="/",
        )
        return response


@router.post("/auth/logout", status_code=204, response_class=Response)
def logout(actor: ConversationActor, request: Request, runtime: RuntimeDep) -> Response:
    """Ends this session (a portal link's session too: PA6 lets it sign out)."""
    with runtime.write() as uow:
        session_id = getattr(request.state, "session_id", None)
        if session_id:
            sessions.sign_out(uow, actor, session_id)
        response = Response(status_code=204)
        response.delete_cookie(
            session_cookie_name(runtime),
            path="/",
            secure=runtime.settings.secure_cookies,
            httponly=True,
        )
        return response


@router.get("/me")
def me(actor: CurrentActor, runtime: RuntimeDep) -> MeOut:
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
