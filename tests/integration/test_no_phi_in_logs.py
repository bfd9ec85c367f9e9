"""T26: a real `confide serve`, at log level debug, used with canary strings in every
field a person types (client name and email, message text, away text, search terms) and in
bad input of every kind; then its whole output is searched for the canaries.

The in-process part of the suite is watched the same way for all its tests
(tests/phi_watch.py); this one covers the server's own logging setup (uvicorn, the
lifespan tasks, the outbox relay) as it runs in production. (Level trace, which logs whole
ASGI scopes with their query strings, is refused outside demo mode: config.py.)
"""

import os
import secrets
from pathlib import Path

import httpx
import pytest

from confide.demo import DEMO_PASSWORD
from tests.integration.test_serve import free_port, serve, stop

pytestmark = pytest.mark.skipif(
    os.environ.get("CONFIDE_TEST_DATABASE") == "postgres", reason="embedded default only"
)


def canary(kind: str) -> str:
    return f"{kind}{secrets.token_hex(6)}"


def signed_in(base: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=f"{base}/api/v1", headers={"Origin": base})
    r = client.post("/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert r.status_code == 204, r.text
    return client


def test_t26_server_output_holds_no_canary(tmp_path: Path):
    name, email = canary("Zed Name"), canary("zed") + "@example.test"
    text, away, search = canary("text "), canary("away "), canary("Search")
    canaries = [name, email, text, away, search]
    port = free_port()
    proc = serve(tmp_path, port, env={"CONFIDE_LOG_LEVEL": "debug"})
    base = f"http://127.0.0.1:{port}"
    try:
        olivia = signed_in(base, "olivia@maple.test")
        carl = signed_in(base, "carl@maple.test")
        members = olivia.get("/members").json()
        carl_id = next(m["id"] for m in members if m["email"] == "carl@maple.test")
        r = olivia.post(
            "/clients", json={"name": name, "email": email, "primary_clinician_id": carl_id}
        )
        assert r.status_code == 201, r.text
        client_id = r.json()["id"]
        r = olivia.patch(
            f"/clients/{client_id}/portal", json={"portal_access": True, "messaging_enabled": True}
        )
        assert r.status_code == 200, r.text
        r = carl.post(
            "/conversations",
            json={"member_ids": [], "client_id": client_id, "text": text, "idempotency_key": "t1"},
        )
        assert r.status_code == 201, r.text
        conv = r.json()["conversation_id"]
        message_id = r.json()["message"]["id"]
        assert carl.put("/me/away", json={"on": True, "text": away}).status_code == 200
        # Bad input of every kind, each carrying a canary: refused, and not logged.
        bad = [
            carl.post(
                f"/conversations/{conv}/messages",
                json={"text": text * 500, "idempotency_key": "t2"},
            ),
            carl.post(
                f"/conversations/{conv}/messages",
                json={"text": text + "\x00", "idempotency_key": "t3"},
            ),
            carl.post(
                f"/conversations/{conv}/messages",
                content=b'{"text": "' + text.encode() + b'", ',
                headers={"content-type": "application/json"},
            ),
            carl.put("/me/away", json={"on": True, "text": away * 100}),
            olivia.post("/clients", json={"name": name * 100, "email": email}),
            carl.post(f"/conversations/{conv + 10_000}/messages", json={"text": text}),
        ]
        assert all(400 <= r.status_code < 500 for r in bad), [r.status_code for r in bad]
        assert carl.post("/recipients/search", json={"q": search}).status_code == 200
        assert olivia.post("/clients/search", json={"q": search}).status_code == 200
        r = carl.delete(f"/conversations/{conv}/messages/{message_id}")
        assert r.status_code == 200, r.text
        assert olivia.get(f"/clients/{client_id}/transcript").status_code == 200
        assert olivia.get("/audit.csv").status_code == 200
        assert carl.post("/auth/logout").status_code in (200, 204)
    finally:
        output = stop(proc)
    # The search below means something only if the app's own logging was really on.
    assert "confide started: database sqlite" in output, output[-2000:]
    found = [output[max(0, i - 150) : i + 50] for i in (output.find(c) for c in canaries) if i >= 0]
    assert not found, f"health information in the server's output: {found}"
