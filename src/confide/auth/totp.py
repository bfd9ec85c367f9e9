"""TOTP second factor (RFC 6238 via pyotp) and recovery codes (PA4).

Codes are 6 digits, 30-second steps; one step of clock drift either way is accepted.
`matching_step` returns the time step a code belongs to, so the caller can refuse a
step that was already used (no replay within the window).
"""

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp
import segno

from confide.domain.signin import RECOVERY_CODE_COUNT

DIGITS = 6
INTERVAL = 30
DRIFT_STEPS = 1
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
_RECOVERY_GROUPS = 4
_RECOVERY_GROUP_LEN = 5  # 20 characters of 31 symbols: ~99 bits


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, RFC 4226's recommendation


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=account, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """The provisioning URI as an SVG QR code (no external request, no script)."""
    return str(segno.make(uri, error="m").svg_inline(scale=4, border=2))


def step_of(at: datetime) -> int:
    return int(at.timestamp()) // INTERVAL


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step `code` is valid for around `at` (±DRIFT_STEPS), or None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    now = step_of(at)
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    return [
        "-".join(
            "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_GROUP_LEN))
            for _ in range(_RECOVERY_GROUPS)
        )
        for _ in range(RECOVERY_CODE_COUNT)
    ]


def normalise_recovery_code(code: str) -> str | None:
    """Recovery codes are typed by people: case, spaces and dashes do not matter."""
    raw = "".join(c for c in code.lower() if c not in " -")
    if len(raw) != _RECOVERY_GROUPS * _RECOVERY_GROUP_LEN or any(
        c not in _RECOVERY_ALPHABET for c in raw
    ):
        return None
    return raw


def recovery_code_hash(code: str) -> str:
    """SHA-256 of the normalised code: ~99 random bits make a slow hash unnecessary."""
    return hashlib.sha256(b"confide-recovery:" + code.encode()).hexdigest()


def looks_like_totp(code: str) -> bool:
    stripped = code.strip().replace(" ", "")
    return len(stripped) == DIGITS and stripped.isascii() and stripped.isdigit()
