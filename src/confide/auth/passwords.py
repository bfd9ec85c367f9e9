"""Team member passwords: argon2id (argon2-cffi)."""

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

_PRODUCTION = PasswordHasher(type=Type.ID)  # library defaults: RFC 9106 low-memory profile
# Tests and demo mode only (config refuses it otherwise): same algorithm, tiny cost.
_FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=Type.ID)

MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1000


class Passwords:
    def __init__(self, *, fast: bool = False) -> None:
        self._hasher = _FAST if fast else _PRODUCTION
        # Verified against when the email is unknown, so timing does not reveal it.
        self._dummy = self._hasher.hash("confide-dummy-password")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False
