"""Scale-out, for real (NT5, docs/scale-out.md): PostgreSQL and Redis on 127.0.0.1, two
`confide serve` processes, nginx in front of them with deploy/confide-locations.conf.

Runs when CONFIDE_TEST_POSTGRES_URL is set, Redis answers on 127.0.0.1:6379 and nginx
is installed (Debian package `nginx`); skipped otherwise. It creates and drops its own
database next to the one in CONFIDE_TEST_POSTGRES_URL.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from confide.domain.actors import Actor, Via
from confide.realtime.broker import CHANNEL
from confide.runtime import build_runtime
from confide.services import sessions
from confide.store.uow import unit_of_work
from tests.conftest import TEST_MASTER_KEY, make_settings
from tests.personas import World, build_world

ROOT = Path(__file__).resolve().parents[2]
CONFIDE = str(Path(sys.executable).parent / "confide")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
REDIS_URL = "redis://127.0.0.1:6379/0"
WAIT = 15.0  # bounds for "it arrives", never assertions about speed


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("CONFIDE_TEST_POSTGRES_URL"), reason="CONFIDE_TEST_POSTGRES_URL unset"
    ),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed"),
    pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{base} did not become healthy")


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    base = os.environ["CONFIDE_TEST_POSTGRES_URL"]
    name = f"confide_scale_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        base.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Deployment:
    world: World
    procs: dict[str, subprocess.Popen[bytes]]
    ports: dict[str, int]
    nginx_port: int
    logs: Path

    @property
    def front(self) -> str:
        return f"127.0.0.1:{self.nginx_port}"

    def direct(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


def spawn(name: str, port: int, database: str, logs: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env.update(
        CONFIDE_DATABASE_URL=database,
        CONFIDE_MASTER_KEY=TEST_MASTER_KEY,
        CONFIDE_REDIS_URL=REDIS_URL,
        CONFIDE_PUBLIC_ORIGIN=f"http://127.0.0.1:{port}",
        CONFIDE_LOG_LEVEL="warning",
    )
    out = (logs / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [CONFIDE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return proc


def start_nginx(tmp: Path, port: int, upstreams: list[int]) -> subprocess.Popen[bytes]:
    (tmp / "logs").mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" "";
    }}
    upstream confide {{
        least_conn;
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        include {ROOT}/deploy/confide-locations.conf;
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX or "nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "logs" / "nginx.out").open("ab"),
    )
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def deployment(database: str, tmp_path: Path) -> Iterator[Deployment]:
    runtime = build_runtime(make_settings(tmp_path / "data", database_url=database))
    world = build_world(runtime)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"a": free_port(), "b": free_port()}
    nginx_port = free_port()
    try:
        for name, port in ports.items():  # side by side: the schema is at head already
            procs[name] = spawn(name, port, database, tmp_path)
        for name, port in ports.items():
            wait_healthy(f"http://127.0.0.1:{port}", procs[name])
        procs["nginx"] = start_nginx(tmp_path, nginx_port, list(ports.values()))
        yield Deployment(world, procs, ports, nginx_port, tmp_path)
    finally:
        for proc in procs.values():
            stop(proc)
        runtime.close()


def session_of(world: World, name: str) -> str:
    actor = world.actor(name)
    with unit_of_work(world.runtime.db) as uow:
        return sessions.start_session(uow, Actor(actor.practice_id, actor.party, Via.PASSWORD))


def token_of(world: World, name: str) -> str:
    with unit_of_work(world.runtime.db) as uow:
        return sessions.create_api_token(uow, world.actor(name), name="scale")[1]


def open_ws(host: str, session_id: str) -> ClientConnection:
    return connect(
        f"ws://{host}/api/v1/ws",
        additional_headers={"Cookie": f"__Host-confide_session={session_id}"},
        origin=f"http://{host}",
        proxy=None,
        open_timeout=WAIT,
        legacy=True,
    )


@dataclass
class Client:
    """A browser tab: resumes from its cursor whenever the socket drops."""

    host: str
    session_id: str
    cursor: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    ws: ClientConnection | None = None

    def connect(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                self.ws = open_ws(self.host, self.session_id)
                self.ws.send(json.dumps({"type": "resume", "cursor": self.cursor}))
                return
            except (OSError, InvalidHandshake):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def pump_until(self, text_: str) -> None:
        deadline = time.monotonic() + WAIT
        while not any(m["message"]["text"] == text_ for m in self.messages):
            assert time.monotonic() < deadline, f"{text_!r} never arrived"
            assert self.ws is not None
            try:
                frame = json.loads(self.ws.recv(timeout=WAIT))
            except ConnectionClosed:
                self.reconnects += 1
                self.connect()
                continue
            if "position" in frame:
                self.cursor = max(self.cursor, frame["position"])
            if frame["type"] == "message.created":
                self.messages.append(frame)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def post_message(host: str, token: str, conversation_id: int, text_: str) -> None:
    """As a careful client: retry a failed send with the same key (MS5)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            r = httpx.post(
                f"http://{host}/api/v1/conversations/{conversation_id}/messages",
                json={"text": text_, "idempotency_key": text_},
                headers={"Authorization": f"Bearer {token}"},
                timeout=5,
            )
            if r.status_code in (200, 201):
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"could not send {text_!r}"
        time.sleep(0.1)


def start_conversation(host: str, token: str, member_id: int, text_: str) -> int:
    r = httpx.post(
        f"http://{host}/api/v1/conversations",
        json={"member_ids": [member_id], "text": text_, "idempotency_key": text_},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["conversation_id"])


def test_nt5_a_message_sent_through_one_process_reaches_a_socket_on_the_other(
    deployment: Deployment,
):
    w = deployment.world
    on_b = Client(deployment.direct("b"), session_of(w, "carl"))
    through_nginx = Client(deployment.front, session_of(w, "carl"))
    for c in (on_b, through_nginx):
        c.connect()
    announcements = redis.Redis.from_url(REDIS_URL).pubsub(ignore_subscribe_messages=True)
    announcements.subscribe(CHANNEL)
    olivia = token_of(w, "olivia")
    conversation = start_conversation(deployment.direct("a"), olivia, w.id("carl"), "via A")
    post_message(deployment.front, olivia, conversation, "via nginx")
    for c in (on_b, through_nginx):
        c.pump_until("via nginx")
        assert [m["message"]["text"] for m in c.messages] == ["via A", "via nginx"]
        c.close()
    # What crossed Redis: positions, nothing else (no ids, no names, no text).
    message = None
    deadline = time.monotonic() + WAIT
    while message is None and time.monotonic() < deadline:
        message = announcements.get_message(timeout=1.0)
    assert message is not None and message["data"].isdigit()
    announcements.close()


def test_nt5_killing_one_process_loses_nothing(deployment: Deployment):
    w = deployment.world
    olivia = token_of(w, "olivia")
    tabs = [Client(deployment.front, session_of(w, "carl")) for _ in range(4)]
    for tab in tabs:
        tab.connect()  # least_conn: spread over both processes
    conversation = start_conversation(deployment.front, olivia, w.id("carl"), "m0")
    for i in range(1, 10):
        post_message(deployment.front, olivia, conversation, f"m{i}")
    for tab in tabs:
        tab.pump_until("m9")

    deployment.procs["a"].kill()  # SIGKILL: no goodbye to anyone
    deployment.procs["a"].wait()
    for i in range(10, 20):
        post_message(deployment.front, olivia, conversation, f"m{i}")
    for tab in tabs:
        tab.pump_until("m19")
        seqs = [m["message"]["seq"] for m in tab.messages]
        assert seqs == list(range(1, 21)), seqs  # every message, once, in order
        tab.close()
    assert sum(tab.reconnects for tab in tabs) >= 1  # some tabs were on the killed one
