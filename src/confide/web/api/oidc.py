"""Sign-in with an OpenID Connect provider (PA3): `GET /auth/oidc/start` → the provider
→ `GET /auth/oidc/callback` → a session. `POST /auth/oidc/link` lets a signed-in team
member link their account (where the practice allows it). Not configured: 404.

The pre-auth cookie (`__Host-confide_oidc`, HttpOnly, SameSite=Lax so that the
provider's redirect back carries it, 10 minutes) holds the secret that state, nonce and
the PKCE verifier derive from: a callback in another browser, or a second time, fails.
"""

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from confide.auth.oidc import OidcClient, OidcError, ProviderConfig, derive, state_matches
from confide.domain.actors import Actor, PartyKind
from confide.domain.errors import NotFound
from confide.domain.signin import OIDC_REQUEST_TTL, SecondFactorRequired
from confide.runtime import Runtime
from confide.services import oidc_signin
from confide.web.api.auth import set_session_cookie, set_signin_cookie
from confide.web.deps import CurrentActor, RuntimeDep, client_ip

log = logging.getLogger("confide.web")
router = APIRouter(tags=["sign-in"])

CALLBACK_PATH = "/api/v1/auth/oidc/callback"
# Where a browser lands after signing in (the web app's and the portal's start pages).
LANDING = {
    PartyKind.MEMBER: "/messages",
    PartyKind.CLIENT: "/portal",
    PartyKind.CONTACT: "/portal",
}
# The web sign-in page: the code step after the provider (PA4), and the one generic
# refusal for a browser (the reason stays in the audit row).
SECOND_STEP_PAGE = "/signin/code"
REFUSED_PAGE = "/signin?oidc=failed"


class LinkOut(BaseModel):
    authorization_url: str


class ProviderOut(BaseModel):
    enabled: bool
    name: str | None


def oidc_cookie_name(runtime: Runtime) -> str:
    return "__Host-confide_oidc" if runtime.settings.secure_cookies else "confide_oidc"


def make_client(runtime: Runtime) -> OidcClient | None:
    s = runtime.settings
    if not s.oidc_issuer or not s.oidc_client_id:
        return None
    return OidcClient(
        ProviderConfig(
            issuer=s.oidc_issuer,
            client_id=s.oidc_client_id,
            client_secret=s.oidc_client_secret.get_secret_value() if s.oidc_client_secret else "",
            discovery_url=s.oidc_discovery_url
            or f"{s.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
            redirect_uri=f"{s.public_origin.rstrip('/')}{CALLBACK_PATH}",
            algorithms=tuple(s.oidc_algorithms),
            display_name=s.oidc_display_name,
        )
    )


def _client(request: Request) -> OidcClient:
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    if client is None:
        raise NotFound()
    return client


def _set_preauth_cookie(response: Response, runtime: Runtime, secret: str) -> None:
    response.set_cookie(
        oidc_cookie_name(runtime),
        secret,
        max_age=int(OIDC_REQUEST_TTL.total_seconds()),
        httponly=True,
        secure=runtime.settings.secure_cookies,
        samesite="lax",
        path="/",
    )


@router.get("/auth/oidc/provider")
def provider(request: Request) -> ProviderOut:
    """Whether OIDC sign-in is offered, and the provider's name for the button."""
    client: OidcClient | None = getattr(request.app.state, "oidc", None)
    if client is None:
        return ProviderOut(enabled=False, name=None)
    return ProviderOut(enabled=True, name=client.config.display_name)


@router.get("/auth/oidc/start", status_code=303, response_class=RedirectResponse)
def start(request: Request, runtime: RuntimeDep) -> RedirectResponse:
    """Redirects to the provider (authorization code + PKCE, state, nonce)."""
    client = _client(request)
    with runtime.write() as uow:
        secret = oidc_signin.begin(uow)
    try:
        url = client.authorization_url(derive(secret))
    except OidcError as exc:
        log.warning("oidc start failed: %s", exc.reason)
        raise oidc_signin.OidcRefused(exc.reason) from None
    response = RedirectResponse(url, status_code=303)
    _set_preauth_cookie(response, runtime, secret)
    return response


def begin_link(request: Request, runtime: Runtime, actor: Actor, response: Response) -> str:
    """A signed-in team member starts linking their OIDC account: the provider URL to
    open; `response` gets the pre-auth cookie. The API route and the Security page
    (web/pages/security.py) both use it. Not configured: 404."""
    client = _client(request)
    with runtime.write() as uow:
        secret = oidc_signin.begin(uow, link=actor)
    try:
        url = client.authorization_url(derive(secret))
    except OidcError as exc:
        raise oidc_signin.OidcRefused(exc.reason) from None
    _set_preauth_cookie(response, runtime, secret)
    return url


@router.post("/auth/oidc/link")
def link(request: Request, response: Response, actor: CurrentActor, runtime: RuntimeDep) -> LinkOut:
    """A signed-in team member links their OIDC account: answers the provider URL to
    open (and sets the pre-auth cookie); the callback links instead of signing in."""
    return LinkOut(authorization_url=begin_link(request, runtime, actor, response))


def wants_page(request: Request) -> bool:
    """A browser's navigation (the provider's redirect back), not a program."""
    return "text/html" in request.headers.get("accept", "")


@router.get("/auth/oidc/callback", status_code=303, response_class=Response)
def callback(
    request: Request, runtime: RuntimeDep, code: str = "", state: str = "", error: str = ""
) -> Response:
    """The provider's redirect back: checks state against the pre-auth cookie, spends
    the attempt, exchanges the code (with the PKCE verifier), validates the id token and
    signs in: 303 to Messages or the portal with the session cookie. A member with a
    second factor: 303 to the sign-in page's code step with the pending-step cookie.
    Any failure: 403 `oidc_sign_in_failed`, audited with its reason; a browser is sent
    to the sign-in page, which says that it did not work (and nothing more)."""
    try:
        return _callback(request, runtime, code, state, error)
    except oidc_signin.OidcRefused:
        if not wants_page(request):
            raise
        response = RedirectResponse(REFUSED_PAGE, status_code=303)
        response.delete_cookie(
            oidc_cookie_name(runtime), path="/", secure=runtime.settings.secure_cookies
        )
        return response


def _callback(request: Request, runtime: Runtime, code: str, state: str, error: str) -> Response:
    client = _client(request)
    ip = client_ip(request)
    secret = request.cookies.get(oidc_cookie_name(runtime), "")
    with runtime.write() as uow:
        if error or not code or len(code) > 2000 or len(state) > 200:
            raise oidc_signin.refuse(uow, "provider_error" if error else "no_code", ip)
        if not secret or len(secret) > 200:
            raise oidc_signin.refuse(uow, "no_preauth_cookie", ip)
        attempt = derive(secret)
        if not state_matches(attempt, state):
            raise oidc_signin.refuse(uow, "state_mismatch", ip)
        link_target = oidc_signin.consume(uow, secret, ip)
    try:  # the provider is called outside any transaction
        claims = client.validate(client.exchange_code(code, attempt), attempt)
    except OidcError as exc:
        with runtime.write() as uow:
            raise oidc_signin.refuse(uow, exc.reason, ip) from None
    with runtime.write() as uow:
        try:
            session_id, actor = oidc_signin.complete(uow, claims, link_target, ip=ip)
        except SecondFactorRequired as pending:
            response = RedirectResponse(SECOND_STEP_PAGE, status_code=303)
            set_signin_cookie(response, runtime, pending.challenge_token)
            response.delete_cookie(
                oidc_cookie_name(runtime), path="/", secure=runtime.settings.secure_cookies
            )
            return response
    response = RedirectResponse(LANDING.get(actor.party.kind, "/"), status_code=303)
    set_session_cookie(response, runtime, session_id)
    response.delete_cookie(
        oidc_cookie_name(runtime), path="/", secure=runtime.settings.secure_cookies
    )
    return response
