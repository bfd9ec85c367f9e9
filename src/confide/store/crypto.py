"""At-rest encryption of message text (RC2): AES-256-GCM envelope encryption.

- The master key (32 bytes) lives outside the database: `CONFIDE_MASTER_KEY` in
  production, `data_dir/master.key` (mode 0600) in the embedded default.
- Each practice has its own random data key, stored wrapped by the master key with the
  practice id as associated data (a wrapped key cannot be moved to another practice).
- A message body is `nonce(12) || ciphertext+tag`, with associated data naming the
  practice, conversation and sequence number: a body copied to another row fails to
  decrypt instead of showing the wrong text in the wrong place.
"""

import base64
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12


class CorruptCiphertext(Exception):
    """A body or wrapped key failed authentication: tampered with, or moved."""


def load_or_create_key_file(path: Path) -> bytes:
    """The embedded default's master key: created once (0600), then read."""
    if path.exists():
        return decode_master_key(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key


def decode_master_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError("the master key must be base64 of 32 random bytes") from exc
    if len(key) != KEY_BYTES:
        raise ValueError("the master key must be base64 of 32 random bytes")
    return key


def new_master_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def message_aad(practice_id: int, conversation_id: int, seq: int) -> bytes:
    return f"confide:message:{practice_id}:{conversation_id}:{seq}".encode()


def chart_note_aad(practice_id: int, client_id: int, note_id: int) -> bytes:
    """A chart note's body is bound to its row: practice, client and note id (TR2)."""
    return f"confide:chart-note:{practice_id}:{client_id}:{note_id}".encode()


class KeyRing:
    """Holds the master key and caches unwrapped practice data keys in memory."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError("master key must be 32 bytes")
        self._master = AESGCM(master_key)
        self._audit_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"confide audit chain v1"
        ).derive(master_key)
        self._data_keys: dict[int, AESGCM] = {}
        self._lock = threading.Lock()
        # Jobs and email links (branch `mail`): sealing job payloads that must carry an
        # address, and keyed hashes of addresses and IPs for rate limits.
        self._seal = AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"confide sealed v1").derive(
                master_key
            )
        )
        self._lookup_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"confide lookup hash v1"
        ).derive(master_key)

    # -- data keys ---------------------------------------------------------------------

    def new_wrapped_data_key(self, practice_id: int) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        key = secrets.token_bytes(KEY_BYTES)
        return nonce + self._master.encrypt(nonce, key, self._key_aad(practice_id))

    def install(self, practice_id: int, wrapped: bytes) -> None:
        try:
            key = self._master.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._key_aad(practice_id)
            )
        except InvalidTag as exc:
            raise CorruptCiphertext(
                f"the data key of practice {practice_id} does not open with this master key"
            ) from exc
        with self._lock:
            self._data_keys[practice_id] = AESGCM(key)

    def has(self, practice_id: int) -> bool:
        return practice_id in self._data_keys

    @staticmethod
    def _key_aad(practice_id: int) -> bytes:
        return f"confide:data-key:{practice_id}".encode()

    # -- bodies ------------------------------------------------------------------------

    def encrypt(self, practice_id: int, plaintext: str, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._data_keys[practice_id].encrypt(nonce, plaintext.encode(), aad)

    def decrypt(self, practice_id: int, body: bytes, aad: bytes) -> str:
        try:
            data = self._data_keys[practice_id].decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], aad)
        except InvalidTag as exc:
            raise CorruptCiphertext("a message body failed authentication") from exc
        return data.decode()

    # -- audit chain -------------------------------------------------------------------

    def audit_mac(self, prev_hash: str, canonical: bytes) -> str:
        return hmac.new(self._audit_key, prev_hash.encode() + canonical, hashlib.sha256).hexdigest()

    # -- sealed values and keyed hashes (jobs, email links) ----------------------------

    def seal(self, plaintext: str, aad: bytes) -> str:
        """Encrypt a small value that is not one practice's (an address a job must
        mail); base64 text, safe to keep in a JSON payload."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._seal.encrypt(nonce, plaintext.encode(), aad)
        return base64.urlsafe_b64encode(sealed).decode()

    def unseal(self, sealed: str, aad: bytes) -> str:
        raw = base64.urlsafe_b64decode(sealed.encode())
        try:
            return self._seal.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()
        except InvalidTag as exc:
            raise CorruptCiphertext("a sealed value failed authentication") from exc

    def lookup_hash(self, label: str, value: str) -> str:
        """HMAC of a value (an email address, an IP) for counting without storing it."""
        return hmac.new(self._lookup_key, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()
