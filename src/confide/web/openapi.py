"""How the API authenticates, in its OpenAPI description (issue 8, T02).

FastAPI describes the routes; the credentials are read by `web/deps.py` (`credentials`),
not by FastAPI's security classes, so the description would otherwise say nothing about
them. `with_security` adds the two real ways in, required by every operation except the
few in `PUBLIC_OPERATIONS`, which answer without them. Tools such as schemathesis'
`ignored_auth` check hold the server to it: a secured operation must refuse a request
without credentials or with wrong ones (401, or 403 `csrf_failed`).
"""

import copy
from typing import Any

BEARER = "apiToken"
COOKIE = "sessionCookie"

# (method, path under the API prefix): the operations that answer without credentials.
# Found by reading the routes: none of them depends on `current_actor` or its kin, nor
# reads the credentials itself (the send path does, in its handler). The second-factor
# step reads the pending-step cookie of a password sign-in, not a session.
PUBLIC_OPERATIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("post", "/auth/login"),  # email + password
        ("post", "/auth/login/second-factor"),  # the code after a password sign-in
        ("post", "/auth/instant-sign-in"),  # PA2: ask for an emailed sign-in link
        ("post", "/auth/password-reset"),  # ask for an emailed reset link
        ("get", "/auth/oidc/provider"),  # whether the sign-in page shows the OIDC button
        ("get", "/auth/oidc/start"),  # PA3: off to the provider
        ("get", "/auth/oidc/callback"),  # PA3: back from the provider
        ("get", "/push/vapid-public-key"),  # NT4: the public applicationServerKey
    }
)


def security_schemes(session_cookie: str) -> dict[str, dict[str, str]]:
    return {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (`cfd_…`), made by a team member under "
            "Settings or `POST /api/v1/tokens`: `Authorization: Bearer cfd_…`. "
            "When present it is used, and any session cookie is ignored.",
        },
        COOKIE: {
            "type": "apiKey",
            "in": "cookie",
            "name": session_cookie,
            "description": "The browser session set by sign-in (HttpOnly, SameSite=Lax). "
            "Its name is `__Host-confide_session`, or `confide_session` when the server "
            "runs without secure cookies (demo mode over plain http); this description "
            "names the one this server uses. An unsafe method (POST, PUT, PATCH, DELETE) "
            "authenticated by the cookie must come from Confide's own origin: a "
            "cross-origin `Origin`, or no `Origin` and a body that is not JSON, is "
            "refused with 403 `csrf_failed`.",
        },
    }


def with_security(description: dict[str, Any], prefix: str, session_cookie: str) -> dict[str, Any]:
    """A copy of FastAPI's `description` that declares the authentication: the two
    schemes, either one required everywhere, and `security: []` on the public
    operations. Raises if a public operation is not in the description (a renamed or
    removed route must not leave a stale entry)."""
    described = copy.deepcopy(description)
    described.setdefault("components", {})["securitySchemes"] = security_schemes(session_cookie)
    described["security"] = [{BEARER: []}, {COOKIE: []}]
    paths = described.get("paths", {})
    for method, path in sorted(PUBLIC_OPERATIONS):
        operation = paths.get(prefix + path, {}).get(method)
        if operation is None:
            raise LookupError(f"public operation {method.upper()} {path} is not in the API")
        operation["security"] = []
    return described
