"""A small OpenID Connect provider for the tests, on 127.0.0.1 with its own RSA keys:
discovery, JWKS, and a token endpoint that checks the client's secret and PKCE, then
answers an id token shaped by the test (wrong audience, expired, bad signature …)."""

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "confide-test-client"
CLIENT_SECRET = "test-client-secret-" + secrets.token_hex(8)


@dataclass
class Grant:
    challenge: str
    claims: dict[str, Any]
    sign_with: str  # "good" | "evil" | "none"


@dataclass
class Provider:
    base: str = ""
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    evil: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    grants: dict[str, Grant] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    # The person who "signs in" at /authorize (a browser test sets it): their claims.
    next_login: dict[str, Any] | None = None

    def issue(self, challenge: str, nonce: str, *, sign_with: str = "good", **claims: Any) -> str:
        """An authorization code for an id token with these claims (over defaults)."""
        now = int(time.time())
        base = {
            "iss": self.base,
            "aud": CLIENT_ID,
            "sub": "sub-" + secrets.token_hex(6),
            "email_verified": True,
            "iat": now,
            "exp": now + 600,
            "nonce": nonce,
        }
        base.update(claims)
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            challenge, {k: v for k, v in base.items() if v is not None}, sign_with
        )
        return code

    def id_token(self, grant: Grant) -> str:
        if grant.sign_with == "none":
            header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
            body = base64.urlsafe_b64encode(json.dumps(grant.claims).encode()).rstrip(b"=")
            return f"{header.decode()}.{body.decode()}."
        key = self.key if grant.sign_with == "good" else self.evil
        return jwt.encode(grant.claims, key, algorithm="RS256", headers={"kid": "k1"})

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="k1", alg="RS256", use="sig")
        return {"keys": [jwk]}


def _handler(p: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            return

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._json(
                    200,
                    {
                        "issuer": p.base,
                        "authorization_endpoint": f"{p.base}/authorize",
                        "token_endpoint": f"{p.base}/token",
                        "jwks_uri": f"{p.base}/jwks",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    },
                )
            elif self.path.startswith("/authorize?"):
                self._authorize(dict(urllib.parse.parse_qsl(self.path.split("?", 1)[1])))
            elif self.path == "/jwks":
                self._json(200, p.jwks())
            else:
                self._json(404, {"error": "not_found"})

        def _authorize(self, q: dict[str, str]) -> None:
            """The provider's sign-in page, approved at once for `next_login`: back to
            the client's redirect URI with a code (bound to the PKCE challenge and the
            nonce) and the state, as a real provider does after the person signs in."""
            if q.get("client_id") != CLIENT_ID or p.next_login is None:
                self._json(400, {"error": "invalid_request"})
                return
            code = p.issue(q["code_challenge"], q["nonce"], **p.next_login)
            back = urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
            self.send_response(302)
            self.send_header("Location", f"{q['redirect_uri']}?{back}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            p.token_requests.append(form)
            auth = self.headers.get("Authorization", "")
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if auth != f"Basic {expected}":
                self._json(401, {"error": "invalid_client"})
                return
            grant = p.grants.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if grant is None or digest.rstrip(b"=").decode() != grant.challenge:
                self._json(400, {"error": "invalid_grant"})
                return
            self._json(200, {"id_token": p.id_token(grant), "token_type": "Bearer"})

    return Handler


@contextmanager
def running_provider() -> Iterator[Provider]:
    provider = Provider()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    provider.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
