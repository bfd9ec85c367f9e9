"""The lean WebSocket protocol (web/ws_protocol.py) at the byte level (NT5, RFC 6455).

A real uvicorn server runs the app in a thread with the options `confide serve` uses;
each test speaks raw HTTP and frames over a TCP socket, so it can send what a
well-behaved client library never would (unmasked, oversize, fragmented frames).
"""

import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confide.runtime import Runtime
from confide.web.app import create_app
from confide.web.ws_protocol import accept_key
from tests.conftest import serving
from tests.integration.test_realtime import COOKIE, WAIT, session_of
from tests.personas import World

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key


@pytest.fixture(scope="module")
def app_server(runtime: Runtime) -> Iterator[tuple[str, Any]]:
    app = create_app(runtime)
    with serving(app) as address:
        yield address, app


def frame_head(first: int, n: int, *, masked: bool) -> bytes:
    """A client frame's header up to the mask: `first` (FIN, RSV bits, opcode) as given,
    the mask bit, and the length `n` in the shortest form."""
    mbit = 0x80 if masked else 0
    if n < 126:
        return bytes((first, mbit | n))
    if n < 65536:
        return bytes((first, mbit | 126)) + n.to_bytes(2, "big")
    return bytes((first, mbit | 127)) + n.to_bytes(8, "big")


class Raw:
    """A hand-made WebSocket client: raw handshake, raw frames."""

    def __init__(self, server: str, headers: dict[str, str | None] | None = None) -> None:
        host, port = server.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=WAIT)
        self.buf = b""
        base: dict[str, str] = {
            "Host": server,
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": KEY,
            "Sec-WebSocket-Version": "13",
        }
        for name, value in (headers or {}).items():
            if value is None:
                base.pop(name, None)
            else:
                base[name] = value
        lines = ["GET /api/v1/ws HTTP/1.1", *(f"{k}: {v}" for k, v in base.items()), "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)
        }

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def send(
        self,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        masked: bool = True,
        length: int | None = None,
    ) -> None:
        n = len(payload) if length is None else length
        head = frame_head((0x80 if fin else 0) | opcode, n, masked=masked)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            head += mask
        self.sock.sendall(head + payload)

    def text(self, data: str, **kw: Any) -> None:
        self.send(1, data.encode(), **kw)

    def frame(self) -> tuple[int, bytes]:
        """The next frame from the server (opcode, payload); server frames are unmasked."""
        while True:
            if len(self.buf) >= 2:
                assert not self.buf[1] & 0x80, "a server frame must not be masked"
                n, pos = self.buf[1] & 0x7F, 2
                if n == 126 and len(self.buf) >= 4:
                    n, pos = int.from_bytes(self.buf[2:4], "big"), 4
                if n < 126 and len(self.buf) >= pos + n:
                    op, payload = self.buf[0] & 0x0F, self.buf[pos : pos + n]
                    self.buf = self.buf[pos + n :]
                    return op, payload
            if not self._more():
                raise ConnectionError("closed before a frame came")

    def close_code(self) -> int:
        """Skips data frames up to the close frame; its code."""
        while True:
            op, payload = self.frame()
            if op == 8:
                return int.from_bytes(payload[:2], "big")

    def eof(self) -> bool:
        """Does the server close the TCP connection (after what it had to send)?"""
        try:
            while self._more():
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def opened(server: str, world: World, name: str = "carl") -> Raw:
    raw = Raw(server, {"Cookie": f"{COOKIE}={session_of(world, name)}"})
    assert raw.status == 101
    raw.text('{"type":"resume","cursor":null}')
    op, payload = raw.frame()
    assert op == 1 and b'"ready"' in payload
    return raw


def test_nt5_the_handshake_answer_follows_rfc_6455(world: World, app_server: tuple[str, Any]):
    server, _ = app_server
    raw = opened(server, world)
    try:
        # The handshake passed `opened`; its answer carried the RFC's accept value.
        assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        again = Raw(server)
        assert again.status == 101
        assert again.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert again.headers["upgrade"].lower() == "websocket"
        assert "sec-websocket-extensions" not in again.headers  # no deflate negotiated
        assert again.close_code() == 4401  # no session
        again.close()
    finally:
        raw.close()


def test_nt5_a_handshake_without_upgrade_headers_or_key_is_refused(
    app_server: tuple[str, Any],
):
    server, _ = app_server
    plain = Raw(server, {"Upgrade": None, "Connection": "close"})
    assert plain.status == 404  # a plain GET of the socket's path: no such page
    no_key = Raw(server, {"Sec-WebSocket-Key": None})
    assert no_key.status == 400 and no_key.eof()
    bad_key = Raw(server, {"Sec-WebSocket-Key": "dG9vIHNob3J0"})
    assert bad_key.status == 400
    for r in (plain, no_key, bad_key):
        r.close()


def test_nt5_a_wrong_websocket_version_gets_426_naming_13(app_server: tuple[str, Any]):
    server, _ = app_server
    raw = Raw(server, {"Sec-WebSocket-Version": "8"})
    assert raw.status == 426 and raw.headers["sec-websocket-version"] == "13"
    assert raw.eof()
    raw.close()


def test_nt5_an_oversize_frame_closes_with_1009_before_its_payload(
    world: World, app_server: tuple[str, Any]
):
    server, _ = app_server
    raw = opened(server, world)
    raw.send(1, b"", length=5000)  # only the header: the limit is known from it
    assert raw.close_code() == 1009
    assert raw.eof()
    raw.close()
    # A fragmented message over the limit in all, too.
    raw = opened(server, world)
    raw.text('{"type":"ping","pad":"' + "x" * 3000, fin=False)
    raw.send(0, b"y" * 3000)
    assert raw.close_code() == 1009
    raw.close()


def test_nt5_binary_frames_are_refused(world: World, app_server: tuple[str, Any]):
    server, _ = app_server
    raw = opened(server, world)
    raw.send(2, b"\x00\x01")
    assert raw.close_code() == 1003
    raw.close()


def test_nt5_a_ping_is_answered_with_a_pong_of_the_same_payload(
    world: World, app_server: tuple[str, Any]
):
    server, _ = app_server
    raw = opened(server, world)
    raw.send(9, b"hello")
    assert raw.frame() == (10, b"hello")
    raw.send(10, b"unasked")  # an unsolicited pong is ignored
    raw.text('{"type":"ping"}')  # the app's own ping, still answered
    assert raw.frame() == (1, b'{"type":"pong"}')
    raw.close()


def test_nt5_a_fragmented_text_message_is_put_together(world: World, app_server: tuple[str, Any]):
    server, _ = app_server
    raw = opened(server, world)
    raw.text('{"type":', fin=False)
    raw.send(9, b"in between")  # a control frame may come between fragments
    assert raw.frame() == (10, b"in between")
    raw.send(0, b'"ping"}')
    assert raw.frame() == (1, b'{"type":"pong"}')
    raw.close()


@pytest.mark.parametrize(
    ("what", "frames", "code"),
    [
        ("unmasked", [(1, b'{"type":"ping"}', {"masked": False})], 1002),
        ("a reserved opcode", [(3, b"x", {})], 1002),
        ("a continuation of nothing", [(0, b"x", {})], 1002),
        ("a fragmented ping", [(9, b"x", {"fin": False})], 1002),
        ("a control frame over 125 bytes", [(9, b"x" * 126, {})], 1002),
        ("text that is not UTF-8", [(1, b"\xff\xfe", {})], 1007),
        ("a close frame of one byte", [(8, b"\x03", {})], 1002),
        ("a close code no one may send", [(8, (1005).to_bytes(2, "big"), {})], 1002),
    ],
)
def test_nt5_frames_that_break_rfc_6455_fail_the_connection(
    world: World, app_server: tuple[str, Any], what: str, frames: list[Any], code: int
):
    server, _ = app_server
    raw = opened(server, world)
    for opcode, payload, kw in frames:
        raw.send(opcode, payload, **kw)
    assert raw.close_code() == code, what
    assert raw.eof()
    raw.close()


def test_nt5_the_close_handshake_both_ways(world: World, app_server: tuple[str, Any]):
    server, _ = app_server
    # The client closes: the server answers with the same code and hangs up.
    raw = opened(server, world)
    raw.send(8, (1000).to_bytes(2, "big") + b"bye")
    assert raw.frame() == (8, (1000).to_bytes(2, "big"))
    assert raw.eof()
    raw.close()
    # The server closes (the resume never came in time is slow to test; a bad frame
    # at the app's level is not): it sends 1008 and waits for the client's answer.
    raw = opened(server, world)
    raw.text("not json")
    assert raw.close_code() == 1008
    raw.send(8, (1008).to_bytes(2, "big"))
    assert raw.eof()
    raw.close()


def test_nt5_a_client_that_vanishes_without_closing_leaves_the_hub(
    world: World, app_server: tuple[str, Any]
):
    server, app = app_server
    hub = app.state.hub
    deadline = time.monotonic() + WAIT
    while hub.open_sockets:  # the other tests' sockets are gone
        assert time.monotonic() < deadline
        time.sleep(0.05)
    socks = [opened(server, world) for _ in range(3)]
    assert hub.open_sockets == 3
    socks[0].sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    for raw in socks:
        raw.close()  # no close frame; the first one with a TCP reset
    while hub.open_sockets:
        assert time.monotonic() < deadline, "the hub kept sockets whose clients vanished"
        time.sleep(0.05)


def test_nt5_the_server_pings_and_drops_a_peer_that_never_answers(world: World, runtime: Runtime):
    with serving(create_app(runtime), ws_ping_interval=1.0, ws_ping_timeout=1.0) as server:
        mute, polite = opened(server, world), opened(server, world)
        for _ in range(3):  # a peer that answers every ping stays open
            op, payload = polite.frame()
            assert op == 9 and len(payload) == 4
            polite.send(10, payload)
        # One that never answers gets 1011 at the ping after the unanswered one.
        op, _payload = mute.frame()
        assert op == 9
        assert mute.close_code() == 1011
        assert mute.eof()
        polite.text('{"type":"ping"}')
        while (frame := polite.frame())[0] == 9:
            polite.send(10, frame[1])
        assert frame == (1, b'{"type":"pong"}')
        mute.close()
        polite.close()


# Any bytes a client may send after the handshake: frames with random headers (opcode,
# FIN, RSV bits, mask bit, announced length) and random payloads, then raw garbage.
_any_frame = st.tuples(
    st.integers(0, 255),  # FIN, RSV1-3 and the opcode, unchecked
    st.booleans(),  # masked
    st.binary(max_size=300),
    st.sampled_from([None, 0, 125, 126, 4096, 4097, 70000, 2**63 - 1]),  # announced length
)


@settings(
    max_examples=int(os.environ.get("CONFIDE_WS_FUZZ_EXAMPLES", "25")),
    deadline=None,
    derandomize=True,  # the same examples in every run (CI), widened by the variable
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frames=st.lists(_any_frame, min_size=1, max_size=6), tail=st.binary(max_size=64))
def test_nt5_no_byte_stream_breaks_the_protocol(
    world: World, app_server: tuple[str, Any], frames: list[Any], tail: bytes
):
    """Whatever a client sends, the server answers within the protocol: frames it may
    send (a close with a code of RFC 6455 7.4.1 among them) or nothing, and it goes on
    serving everyone else; the hub lets the socket go once it is closed."""
    server, app = app_server
    raw = opened(server, world)
    raw.sock.settimeout(0.5)
    try:
        for head, masked, payload, length in frames:
            n = len(payload) if length is None else length
            data = frame_head(head, n, masked=masked)
            if masked:
                data += b"\0\0\0\0"  # a zero mask: the payload goes as it is
            raw.sock.sendall(data + payload)
        raw.sock.sendall(tail)
    except OSError:
        pass  # the server closed first, as it may
    try:
        while True:
            op, payload = raw.frame()
            assert op in (1, 8, 9, 10), f"opcode {op} from the server"
            if op == 8:
                assert len(payload) >= 2
                assert int.from_bytes(payload[:2], "big") in (1000, 1002, 1007, 1008, 1009)
                break
    except (TimeoutError, ConnectionError, OSError):
        pass  # still open and waiting for more, or hung up
    raw.close()
    fresh = opened(server, world)  # the server serves on
    fresh.send(8, (1000).to_bytes(2, "big"))
    assert fresh.frame() == (8, (1000).to_bytes(2, "big"))
    fresh.close()
    deadline = time.monotonic() + WAIT
    while app.state.hub.open_sockets:
        assert time.monotonic() < deadline, "a socket stayed in the hub after it closed"
        time.sleep(0.02)
