"""Web Push rules, pure (NT4, NT1): push types, what a subscription may look like, and
the payload, which holds ids and a generic title only, padded to a fixed size so its
length tells nothing either."""

import base64
import ipaddress
import json
from urllib.parse import urlsplit

from confide.domain.actors import PartyKind
from confide.domain.errors import InvalidInput

NEW_MESSAGE = "new_message"
# The types this product produces; the preference list is open for more.
PUSH_TYPES = (NEW_MESSAGE,)
TITLE = "New secure message"
BODY = "Open Confide to read it."
PAYLOAD_BYTES = 256
MAX_ENDPOINT_CHARS = 2000


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_subscription(endpoint: str, p256dh: str, auth: str, *, allow_local: bool) -> None:
    """A push service URL (https; a private or loopback address only in demo mode, the
    server must not be made to POST into its own network) and the browser's keys."""
    bad = InvalidInput("invalid_subscription", "This is not a valid push subscription.")
    if not endpoint or len(endpoint) > MAX_ENDPOINT_CHARS:
        raise bad
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    local = host == "localhost" or host.endswith(".localhost")
    try:
        ip = ipaddress.ip_address(host)
        local = local or not ip.is_global
    except ValueError:
        pass
    if not host or (local and not allow_local) or parts.username or parts.password:
        raise bad
    if parts.scheme != "https" and not (allow_local and local and parts.scheme == "http"):
        raise bad
    try:
        key, secret = _b64url(p256dh), _b64url(auth)
    except ValueError:
        raise bad from None
    if len(key) != 65 or key[0] != 4 or len(secret) != 16:
        raise bad


def conversation_url(kind: PartyKind, conversation_id: int) -> str:
    """Where tapping opens: the web app for team members, the portal for clients."""
    if kind is PartyKind.MEMBER:
        return f"/messages/{conversation_id}"
    return f"/portal/{conversation_id}"


def new_message_payload(kind: PartyKind, conversation_id: int) -> bytes:
    """NT1: ids and a generic title only, padded with spaces to PAYLOAD_BYTES."""
    data = {
        "type": NEW_MESSAGE,
        "title": TITLE,
        "body": BODY,
        "conversation_id": conversation_id,
        "url": conversation_url(kind, conversation_id),
        "tag": f"conversation-{conversation_id}",
    }
    raw = json.dumps(data, separators=(",", ":")).encode()
    if len(raw) > PAYLOAD_BYTES:
        raise ValueError("push payload over its fixed size")
    return raw + b" " * (PAYLOAD_BYTES - len(raw))
