"""The README's run command, for real: `confide serve --demo` in a subprocess, used over
HTTP the way a person trying Confide would, then restarted (nothing acknowledged lost)."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confide.demo import DEMO_PASSWORD
from tests.integration.test_export_cli import confide

CONFIDE = str(Path(sys.executable).parent / "confide")

pytestmark = pytest.mark.skipif(
    os.environ.get("CONFIDE_TEST_DATABASE") == "postgres", reason="embedded default only"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data_dir: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")} | (env or {})
    proc = subprocess.Popen(
        [CONFIDE, "serve", "--demo", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 90  # a loaded CI machine starts slowly
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    out = proc.stdout.read().decode() if proc.stdout else ""
    raise AssertionError(f"confide serve did not start:\n{out}")


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    proc = serve(tmp_path, port)
    yield f"http://127.0.0.1:{port}", tmp_path
    stop(proc)


def test_demo_server_signs_in_and_converses(server: tuple[str, Path]):
    base, data_dir = server
    with httpx.Client(base_url=base) as carl:
        r = carl.post(
            "/api/v1/auth/login", json={"email": "carl@maple.test", "password": DEMO_PASSWORD}
        )
        assert r.status_code == 204, r.text
        convs = carl.get("/api/v1/conversations").json()["conversations"]
        assert len(convs) == 2  # the demo history: Alex, and Scott
        alex_conv = next(c for c in convs if c["client_id"] is not None)
        r = carl.post(
            f"/api/v1/conversations/{alex_conv['id']}/messages",
            json={"text": "4pm works :thumbsup:", "idempotency_key": "serve-1"},
        )
        assert r.status_code == 201
        assert r.json()["message"]["text"] == "4pm works 👍"
    assert (data_dir / "master.key").stat().st_mode & 0o777 == 0o600
    spec = httpx.get(f"{base}/api/v1/openapi.json").json()
    assert "/api/v1/conversations/{conversation_id}/messages" in spec["paths"]


def test_rc2_restart_keeps_every_acknowledged_message_and_the_audit_chain(tmp_path: Path):
    port = free_port()
    proc = serve(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    acknowledged = []
    try:
        with httpx.Client(base_url=base) as carl:
            carl.post(
                "/api/v1/auth/login", json={"email": "carl@maple.test", "password": DEMO_PASSWORD}
            )
            conv = carl.get("/api/v1/conversations").json()["conversations"][0]["id"]
            for i in range(20):
                r = carl.post(
                    f"/api/v1/conversations/{conv}/messages",
                    json={"text": f"note {i}", "idempotency_key": f"r-{i}"},
                )
                assert r.status_code == 201
                acknowledged.append(r.json()["message"]["id"])
    finally:
        proc.kill()  # SIGKILL: no clean shutdown
        proc.wait()
    proc = serve(tmp_path, port)
    try:
        with httpx.Client(base_url=base) as carl:
            carl.post(
                "/api/v1/auth/login", json={"email": "carl@maple.test", "password": DEMO_PASSWORD}
            )
            page = carl.get(f"/api/v1/conversations/{conv}", params={"limit": 100}).json()
            ids = {m["id"] for m in page["messages"]}
            assert set(acknowledged) <= ids
    finally:
        stop(proc)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    verify = subprocess.run(
        [CONFIDE, "audit", "verify", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout


def test_serve_refuses_more_than_one_worker_and_says_how_to_scale_out(tmp_path: Path):
    """`--workers 4` was once accepted and silently ignored: an operator believed four
    processes were serving. One `serve` is one process; the refusal says where to go."""
    done = confide(tmp_path, "serve", "--workers", "4", "--port", str(free_port()))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--workers must be 1" in done.stdout
    assert "docs/scale-out.md" in done.stdout
    assert not (tmp_path / "confide.db").exists()  # refused before anything was done
