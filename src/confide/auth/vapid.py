"""The application server's VAPID key pair for Web Push (NT4).

Made at first start and kept: `CONFIDE_VAPID_PRIVATE_KEY` (PEM) when set, which is
what several processes on several machines need; otherwise `vapid_private.pem` in the
data folder (mode 0600), created once. Changing the key invalidates every browser's
subscription (browsers bind a subscription to the key it was made with).
"""

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid02  # type: ignore[import-untyped]


@dataclass(frozen=True)
class VapidKeys:
    vapid: Vapid02
    # The `applicationServerKey` for PushManager.subscribe: base64url of the
    # uncompressed P-256 public point.
    public_key: str
    subject: str


def _public(vapid: Vapid02) -> str:
    raw = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_or_create(*, pem: str | None, path: Path, subject: str) -> VapidKeys:
    if pem:
        vapid = Vapid02.from_pem(pem.encode())
    elif path.exists():
        vapid = Vapid02.from_pem(path.read_bytes())
    else:
        vapid = Vapid02()
        vapid.generate_keys()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: another process
        # starting at the same moment sees no file or a complete one, never half of it.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(vapid.private_pem())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create(pem=None, path=path, subject=subject)
        finally:
            tmp.unlink()
    return VapidKeys(vapid, _public(vapid), subject)
