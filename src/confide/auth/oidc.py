"""OpenID Connect sign-in (PA3): the relying party's side of the authorization code flow
with PKCE (S256), state and nonce, and id token validation with pyjwt and the provider's
JWKS. Any provider with a discovery document works (Google, Microsoft, Okta, Keycloak).

Nothing secret is stored: the browser holds a 256-bit pre-auth secret in a cookie, the
database only its hash (store/repos/oidc.py), and state, nonce and the PKCE verifier
are derived from it with HMAC, so they are bound to that browser and that attempt.

Validation (all required): the signature against a key of the provider's JWKS, the
algorithm in the allowed list (never `none`, never HMAC), `iss` equal to the configured
issuer, `aud` containing the client id (and `azp`, when present, equal to it), `exp`
in the future and `iat` present (60 s of clock skew), `nonce` equal to ours, and
`email_verified` true whenever the email is used.
"""

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

TIMEOUT_SECONDS = 10.0
DISCOVERY_TTL_SECONDS = 3600.0
LEEWAY_SECONDS = 60
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class OidcError(Exception):
    """A refused OIDC sign-in; `reason` is a short code for logs and the audit row
    (never shown to the browser, which gets one generic answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProviderConfig:
    issuer: str
    client_id: str
    client_secret: str
    discovery_url: str
    redirect_uri: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    display_name: str = "Google"


@dataclass(frozen=True)
class Claims:
    issuer: str
    subject: str
    email: str | None
    email_verified: bool


@dataclass(frozen=True)
class Attempt:
    """What one pre-auth secret derives to."""

    state: str
    nonce: str
    verifier: str
    challenge: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def derive(secret: str) -> Attempt:
    key = secret.encode()

    def part(label: bytes) -> str:
        return _b64(hmac.new(key, b"confide-oidc:" + label, hashlib.sha256).digest())

    verifier = part(b"pkce")  # 43 characters: RFC 7636's minimum length, 256 bits
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    return Attempt(part(b"state"), part(b"nonce"), verifier, challenge)


def _fetch_json(
    url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Any:
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise OidcError("bad_url")
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310 - http(s) only, checked above
    request.add_header("Accept", "application/json")
    try:
        # http(s) only, checked above. nosec B310
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310  # nosec B310
            return json.loads(response.read(1_000_000))
    except OidcError:
        raise
    except Exception as exc:
        raise OidcError("provider_unreachable") from exc


class OidcClient:
    """One configured provider; discovery document and JWKS are cached (thread-safe)."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._jwks: jwt.PyJWKClient | None = None

    def discovery(self) -> dict[str, Any]:
        with self._lock:
            if (
                self._discovery is None
                or time.monotonic() - self._fetched_at > DISCOVERY_TTL_SECONDS
            ):
                doc = _fetch_json(self.config.discovery_url)
                if not isinstance(doc, dict) or doc.get("issuer") != self.config.issuer:
                    raise OidcError("discovery_issuer_mismatch")
                for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(doc.get(field), str):
                        raise OidcError("discovery_incomplete")
                self._discovery = doc
                self._fetched_at = time.monotonic()
                self._jwks = jwt.PyJWKClient(
                    doc["jwks_uri"], cache_jwk_set=True, lifespan=300, timeout=TIMEOUT_SECONDS
                )
            return self._discovery

    def authorization_url(self, attempt: Attempt) -> str:
        endpoint = self.discovery()["authorization_endpoint"]
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": "openid email",
                "state": attempt.state,
                "nonce": attempt.nonce,
                "code_challenge": attempt.challenge,
                "code_challenge_method": "S256",
                "prompt": "select_account",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def exchange_code(self, code: str, attempt: Attempt) -> str:
        """The authorization code (with the PKCE verifier) → the raw id token."""
        token_endpoint = self.discovery()["token_endpoint"]
        basic = base64.b64encode(
            f"{urllib.parse.quote(self.config.client_id)}:{urllib.parse.quote(self.config.client_secret)}".encode()
        ).decode()
        answer = _fetch_json(
            token_endpoint,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.config.redirect_uri,
                "code_verifier": attempt.verifier,
            },
            {"Authorization": f"Basic {basic}"},
        )
        token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise OidcError("no_id_token")
        return token

    def validate(self, id_token: str, attempt: Attempt) -> Claims:
        self.discovery()
        allowed = [a for a in self.config.algorithms if a in ASYMMETRIC]
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise OidcError("malformed_token") from exc
        if header.get("alg") not in allowed:
            raise OidcError("algorithm_not_allowed")
        jwks = self._jwks
        if jwks is None:  # set by discovery()
            raise OidcError("discovery_incomplete")
        try:
            key = jwks.get_signing_key_from_jwt(id_token)
            claims = jwt.decode(
                id_token,
                key,
                algorithms=allowed,
                audience=self.config.client_id,
                issuer=self.config.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "nonce"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise OidcError("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise OidcError("wrong_audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise OidcError("wrong_issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise OidcError("bad_signature") from exc
        except jwt.PyJWKClientError as exc:
            raise OidcError("unknown_key") from exc
        except jwt.PyJWTError as exc:
            raise OidcError("invalid_token") from exc
        if "azp" in claims and claims["azp"] != self.config.client_id:
            raise OidcError("wrong_audience")
        if not isinstance(claims.get("nonce"), str) or not hmac.compare_digest(
            claims["nonce"], attempt.nonce
        ):
            raise OidcError("nonce_mismatch")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= 255:
            raise OidcError("invalid_token")
        email = claims.get("email")
        verified = claims.get("email_verified") is True or claims.get("email_verified") == "true"
        return Claims(
            issuer=self.config.issuer,
            subject=subject,
            email=email if isinstance(email, str) and len(email) <= 254 else None,
            email_verified=verified,
        )


def state_matches(attempt: Attempt, state: str) -> bool:
    return hmac.compare_digest(attempt.state.encode(), state.encode())
