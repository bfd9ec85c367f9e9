"""A local Web Push service for the tests, on 127.0.0.1: it accepts pushes the way a
browser vendor's service does, checks the VAPID signature, and decrypts each payload
with the subscription's own keys (RFC 8291, aes128gcm) as the browser would."""

import base64
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Device:
    """A browser's side of one subscription."""

    name: str
    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))
    status: int = 201

    def subscription(self) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }


@dataclass
class Received:
    device: str
    status: int
    body: bytes
    headers: dict[str, str]
    plaintext: bytes | None
    vapid_claims: dict[str, Any] | None


@dataclass
class PushService:
    base: str = ""
    devices: dict[str, Device] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    def device(self, name: str, *, status: int = 201) -> Device:
        d = Device(name, f"{self.base}/push/{name}-{os.urandom(6).hex()}", status=status)
        self.devices[d.endpoint.rsplit("/", 1)[1]] = d
        return d

    def for_device(self, device: Device) -> list[Received]:
        return [r for r in self.received if r.device == device.endpoint.rsplit("/", 1)[1]]


def _vapid(header: str) -> dict[str, Any] | None:
    """`vapid t=<jwt>, k=<public key>`: the JWT checked against k (ES256)."""
    if not header.lower().startswith("vapid "):
        return None
    parts = dict(p.strip().split("=", 1) for p in header[6:].split(","))
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
    claims: dict[str, Any] = jwt.decode(
        parts["t"], key, algorithms=["ES256"], options={"verify_aud": False}
    )
    claims["_k"] = parts["k"]
    return claims


def _handler(svc: PushService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            device = svc.devices.get(self.path.rsplit("/", 1)[-1])
            status = device.status if device else 404
            plain = None
            claims = None
            if device is not None:
                plain = http_ece.decrypt(
                    body, private_key=device.key, auth_secret=device.auth, version="aes128gcm"
                )
                claims = _vapid(self.headers.get("Authorization", ""))
            svc.received.append(
                Received(
                    self.path.rsplit("/", 1)[-1], status, body, dict(self.headers), plain, claims
                )
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            svc.event.set()

    return Handler


@contextmanager
def running_push_service() -> Iterator[PushService]:
    svc = PushService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(svc))
    svc.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield svc
    finally:
        server.shutdown()
        server.server_close()
