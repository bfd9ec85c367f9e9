"""A lean WebSocket protocol for uvicorn (RFC 6455), made for many idle sockets.

uvicorn's own protocols keep, for every open socket, an asyncio.Queue and Event, the
parsed handshake request (the websockets parser's generator holds it for the socket's
lifetime) and a sans-I/O connection object: about 8 KB that an idle socket never uses
(docs/benchmarks.md). This one keeps what a socket needs while it is open: its
transport, a few flags, and a buffer only while a frame is partly read. `serve` selects
it (`uvicorn_ws_options`, cli.py); the tests' servers run it too.

What it does (the ASGI WebSocket contract, as uvicorn's protocols do):
- The handshake arrives as the HTTP request uvicorn upgraded. It is checked (GET,
  `Upgrade: websocket`, `Connection: upgrade`, a 16-byte `Sec-WebSocket-Key`,
  `Sec-WebSocket-Version: 13`, or HTTP 400/426) and handed to the app as the scope; the
  request itself is not kept. `websocket.accept` answers 101 (no extension is
  negotiated: frames are small), `websocket.close` before that answers 403.
- Frames from the client must be masked (RFC 6455 5.1) and carry no RSV bit; text and
  binary messages, fragmented or not, up to `ws_max_size` bytes in all (else 1009); a
  text message must be UTF-8 (else 1007); anything else breaking the framing closes
  with 1002. Pings are answered with pongs. The server pings every socket every
  `ws_ping_interval` seconds and drops (1011) a peer that has not answered by the next
  ping (when `ws_ping_timeout` is set: the interval is the timeout, to the second).
  One timer per event loop does it for all sockets, a slice of them each second
  (`Keepalive`), instead of a timer per socket.
- The close handshake: a client's close is answered with the same code and the
  transport closed; the server's close waits up to 10 s for the client's answer.
  Origin checks and everything about sessions stay in the endpoint (web/ws.py).
- Writes: the data frames of one turn of the event loop go out in one write at its
  end (`_queue`); a control frame or the close writes them first (`_write`).
"""

import asyncio
import base64
import hashlib
import logging
import os
import weakref
from collections import deque
from typing import Any
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

log = logging.getLogger("confide.ws")

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 16 * 1024  # uvicorn's HTTP parser already bounds the request
INBOX_LIMIT = 8  # messages parsed but not yet received by the app: then stop reading
CLOSE_TIMEOUT = 10.0

# States
HANDSHAKE, OPEN, CLOSING, CLOSED = 0, 1, 2, 3

# Close codes (RFC 6455 7.4.1)
NORMAL, GOING_AWAY, PROTOCOL_ERROR = 1000, 1001, 1002
NO_STATUS, ABNORMAL, INVALID_DATA = 1005, 1006, 1007
TOO_BIG, INTERNAL_ERROR, RESTART = 1009, 1011, 1012
# What a peer may send in a close frame (RFC 6455 7.4, IANA registry).
_PEER_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

_REASONS = {400: b"Bad Request", 403: b"Forbidden", 426: b"Upgrade Required"}


def accept_key(key: str) -> str:
    # RFC 6455 4.2.2 fixes SHA-1 here; it proves the server speaks WebSocket, nothing more.
    digest = hashlib.sha1(key.encode() + GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """A server frame: final, unmasked."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    if code == NO_STATUS:
        return b""
    data = reason.encode()
    if len(data) > 123:  # a control frame carries 125 bytes at most
        data = data[:123].decode(errors="ignore").encode()
    return code.to_bytes(2, "big") + data


def unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def parse_request(raw: bytes) -> tuple[str, list[tuple[bytes, bytes]]] | None:
    """The request target and headers (names lower-cased), or None if malformed."""
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or not parts[2].startswith(b"HTTP/1.1"):
        return None
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return None
        headers.append((name.lower(), value.strip()))
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    return target, headers


def handshake_refusal(headers: list[tuple[bytes, bytes]]) -> tuple[int, str] | str:
    """The client's key if the handshake is one (RFC 6455 4.2.1), else the HTTP status
    and the reason to answer with."""

    def tokens(name: bytes) -> set[bytes]:
        return {
            t.strip().lower() for n, v in headers if n == name for t in v.split(b",") if t.strip()
        }

    if b"websocket" not in tokens(b"upgrade") or b"upgrade" not in tokens(b"connection"):
        return 400, "Not a WebSocket handshake."
    versions = [v for n, v in headers if n == b"sec-websocket-version"]
    if versions != [b"13"]:
        return 426, "Unsupported WebSocket version."
    keys = [v for n, v in headers if n == b"sec-websocket-key"]
    if len(keys) != 1:
        return 400, "Missing or repeated Sec-WebSocket-Key."
    try:
        raw = base64.b64decode(keys[0], validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        return 400, "Invalid Sec-WebSocket-Key."
    return keys[0].decode("ascii")


class LeanWebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection under uvicorn: `ws=LeanWebSocketProtocol`."""

    __slots__ = (
        "app",
        "app_state",
        "buf",
        "client",
        "close_code",
        "config",
        "disconnected",
        "frag",
        "frag_text",
        "inbox",
        "key",
        "loop",
        "out",
        "ping_payload",
        "read_paused",
        "response",
        "server",
        "server_state",
        "state",
        "timer",
        "transport",
        "waiter",
        "write_waiter",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()  # pragma: no cover
        self.config = config
        self.app = config.loaded_app
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.state = HANDSHAKE
        self.buf = b""
        self.frag: bytearray | None = None
        self.frag_text = False
        self.inbox: deque[dict[str, Any]] | None = None
        self.waiter: asyncio.Future[dict[str, Any]] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.out: list[bytes] | None = None  # data frames of this loop iteration
        self.read_paused = False
        self.key: str | None = None
        self.response: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ping_payload: bytes | None = None
        self.close_code: int | None = None  # the code of the disconnect given to the app
        self.disconnected = False  # the transport is gone

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.server = get_local_addr(self.transport)
        self.client = get_remote_addr(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self._cancel_timer()
        self.server_state.connections.discard(self)
        self._disconnect(NO_STATUS if self.state in (OPEN, CLOSING) else ABNORMAL)
        self.state = CLOSED
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)
        self.buf = b""
        self.frag = None
        self.out = None

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        if self.write_waiter is None:
            self.write_waiter = self.loop.create_future()

    def resume_writing(self) -> None:
        waiter, self.write_waiter = self.write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        self.buf = self.buf + data if self.buf else data
        if self.state == HANDSHAKE:
            if self.key is not None or self.response is not None:
                return  # a client that talks before the 101: read after it
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HANDSHAKE:
                    self._refuse(400, "Handshake too large.")
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            self._handshake(head)
            return
        self._parse()

    def shutdown(self) -> None:
        """uvicorn stops: tell the client and the app (1012), and close."""
        self._cancel_timer()
        if self.state == OPEN:
            self._write(frame(OP_CLOSE, close_payload(RESTART)))
            self._disconnect(RESTART)
        elif self.state == HANDSHAKE:
            self._disconnect(ABNORMAL)
            if self.key is not None:
                self._http(500, "Server restarting.")
        self.state = CLOSED
        self._close_transport()

    # -- the handshake -----------------------------------------------------------------------

    def _handshake(self, head: bytes) -> None:
        parsed = parse_request(head)
        if parsed is None:
            self._refuse(400, "Malformed request.")
            return
        target, headers = parsed
        key = handshake_refusal(headers)
        if not isinstance(key, str):
            self._refuse(*key)
            return
        self.key = key
        raw_path, _, query = target.partition("?")
        root = self.config.root_path
        subprotocols = [
            t.strip()
            for n, v in headers
            if n == b"sec-websocket-protocol"
            for t in v.decode("latin-1").split(",")
            if t.strip()
        ]
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": self.config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": self.server,
            "client": self.client,
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": root.encode("ascii") + raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        self.inbox = deque([{"type": "websocket.connect"}])
        task = self.loop.create_task(self._run_asgi(scope))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _refuse(self, status: int, reason: str) -> None:
        extra = [(b"sec-websocket-version", b"13")] if status == 426 else []
        self._http(status, reason, extra)
        self.state = CLOSED
        self._close_transport()

    def _http(
        self,
        status: int,
        body: str | bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        plain: bool = True,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error"))]
        given = {n.lower() for n, _ in headers or ()}
        for name, value in [*self.server_state.default_headers, *(headers or ())]:
            lines.append(name + b": " + value)
        if plain and b"content-type" not in given:
            lines.append(b"content-type: text/plain; charset=utf-8")
        if b"content-length" not in given:
            lines.append(b"content-length: %d" % len(data))
        lines.append(b"connection: close")
        self._write(b"\r\n".join(lines) + b"\r\n\r\n" + data)

    async def _run_asgi(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            log.exception("WebSocket application failed")
            if self.state == HANDSHAKE:
                self._http(500, "Internal Server Error")
            elif self.state == OPEN:
                self._fail(INTERNAL_ERROR)
        else:
            if self.state == HANDSHAKE:
                log.error("WebSocket application returned without accepting or refusing")
                self._http(500, "Internal Server Error")
        if self.state != CLOSING:  # closing: the client's answer or the timer closes it
            self.state = CLOSED
            self._close_transport()

    # -- ASGI --------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        inbox = self.inbox
        if inbox:
            message = inbox.popleft()
            if not inbox:
                self.inbox = None  # an idle socket keeps no empty deque (~600 bytes)
            if self.read_paused and len(inbox) < INBOX_LIMIT:
                self.read_paused = False
                if not self.disconnected:
                    self.transport.resume_reading()
                self._parse()
            return message
        if self.close_code is not None:
            return {"type": "websocket.disconnect", "code": self.close_code}
        self.waiter = self.loop.create_future()
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def _deliver(self, message: dict[str, Any]) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        if self.inbox is None:
            self.inbox = deque()
        self.inbox.append(message)

    def _disconnect(self, code: int, reason: str = "") -> None:
        """The app learns once that the socket is done."""
        if self.close_code is None:
            self.close_code = code
            self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if self.state == HANDSHAKE and self.response is not None:
            self._send_response(message)
            return
        if self.state == HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._http(403, "")
                self._disconnect(ABNORMAL)
                self.state = CLOSED
                self._close_transport()
            elif kind == "websocket.http.response.start":
                status = int(message["status"])
                if not 100 <= status < 600:
                    raise RuntimeError(f"Invalid HTTP status {status}.")
                self.response = (status, list(message.get("headers", [])), b"")
            elif self.disconnected:
                raise ClientDisconnected()
            else:
                raise RuntimeError(f"Unexpected ASGI message {kind!r} before accept.")
            return
        if self.state != OPEN or self.disconnected:
            raise ClientDisconnected()
        if kind == "websocket.send":
            if self.write_waiter is not None:
                await self.write_waiter
                if self.state != OPEN or self.disconnected:
                    raise ClientDisconnected()
            text = message.get("text")
            if text is not None:
                self._queue(frame(OP_TEXT, text.encode()))
            else:
                self._queue(frame(OP_BINARY, bytes(message.get("bytes") or b"")))
        elif kind == "websocket.close":
            code = int(message.get("code") or NORMAL)
            reason = str(message.get("reason") or "")
            self._close(code, reason)
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r}.")

    def _send_response(self, message: dict[str, Any]) -> None:
        """The app refused the handshake with an HTTP response of its own."""
        assert self.response is not None
        if message["type"] != "websocket.http.response.body":
            raise RuntimeError(f"Unexpected ASGI message {message['type']!r}.")
        status, headers, body = self.response
        body += bytes(message.get("body", b""))
        self.response = (status, headers, body)
        if not message.get("more_body", False):
            names = [(n.lower(), v) for n, v in headers]
            self._http(status, body, names, plain=True)
            self._disconnect(ABNORMAL)
            self.state = CLOSED
            self._close_transport()

    def _accept(self, message: dict[str, Any]) -> None:
        assert self.key is not None
        lines = [
            b"HTTP/1.1 101 Switching Protocols",
            b"upgrade: websocket",
            b"connection: Upgrade",
            b"sec-websocket-accept: " + accept_key(self.key).encode(),
        ]
        for name, value in [*self.server_state.default_headers, *message.get("headers", [])]:
            lines.append(name.lower() + b": " + value)
        if message.get("subprotocol"):
            lines.append(b"sec-websocket-protocol: " + message["subprotocol"].encode())
        self.key = None
        if self.disconnected:
            raise ClientDisconnected()
        self._write(b"\r\n".join(lines) + b"\r\n\r\n")
        self.state = OPEN
        self._start_keepalive()
        if self.buf:
            self._parse()

    # -- frames ------------------------------------------------------------------------------

    def _parse(self) -> None:
        max_size = self.config.ws_max_size
        while self.state in (OPEN, CLOSING) and not self.read_paused:
            buf = self.buf
            if len(buf) < 2:
                return
            b0, b1 = buf[0], buf[1]
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if b0 & 0x70 or not b1 & 0x80:  # an RSV bit (no extension), or unmasked
                self._fail(PROTOCOL_ERROR)
                return
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if opcode >= 8:
                if opcode not in (OP_CLOSE, OP_PING, OP_PONG) or n > 125 or not fin:
                    self._fail(PROTOCOL_ERROR)
                    return
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                if (opcode == OP_CONT) != (self.frag is not None):
                    self._fail(PROTOCOL_ERROR)  # a continuation of nothing, or a new one
                    return
                if n + (len(self.frag) if self.frag is not None else 0) > max_size:
                    self._fail(TOO_BIG)
                    return
            else:
                self._fail(PROTOCOL_ERROR)
                return
            end = pos + 4 + n
            if len(buf) < end:
                return
            payload = unmask(buf[pos + 4 : end], buf[pos : pos + 4])
            self.buf = buf[end:] if len(buf) > end else b""
            self._frame(opcode, bool(fin), payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == OP_PING:
            if self.state == OPEN:
                self._write(frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            if self.ping_payload is not None and payload == self.ping_payload:
                self.ping_payload = None
        elif opcode == OP_CLOSE:
            self._close_received(payload)
        elif opcode == OP_CONT:
            assert self.frag is not None
            self.frag += payload
            if fin:
                data, self.frag = bytes(self.frag), None
                self._message(data, self.frag_text)
        elif fin:
            self._message(payload, opcode == OP_TEXT)
        else:
            self.frag, self.frag_text = bytearray(payload), opcode == OP_TEXT

    def _message(self, data: bytes, text: bool) -> None:
        if self.state != OPEN:
            return  # past the app's close: read only to see the client's answer
        if text:
            try:
                decoded = data.decode()
            except UnicodeDecodeError:
                self._fail(INVALID_DATA)
                return
            self._deliver({"type": "websocket.receive", "text": decoded})
        else:
            self._deliver({"type": "websocket.receive", "bytes": data})
        if self.inbox is not None and len(self.inbox) >= INBOX_LIMIT and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _close_received(self, payload: bytes) -> None:
        code, reason = NO_STATUS, ""
        if len(payload) == 1:
            self._fail(PROTOCOL_ERROR)
            return
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in _PEER_CODES and not 3000 <= code <= 4999:
                self._fail(PROTOCOL_ERROR)
                return
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(INVALID_DATA)
                return
        if self.state == OPEN:
            self._write(frame(OP_CLOSE, close_payload(code)))
            self._disconnect(code, reason)
        self._cancel_timer()
        self.state = CLOSED
        self._close_transport()

    def _close(self, code: int, reason: str) -> None:
        """The app closes: send the close frame, wait for the client's answer a while."""
        self._write(frame(OP_CLOSE, close_payload(code, reason)))
        self._disconnect(code, reason)
        self.state = CLOSING
        self._cancel_timer()
        self.timer = self.loop.call_later(CLOSE_TIMEOUT, self._close_transport)
        if self.read_paused:  # read on, to see the answer
            self.read_paused = False
            self.transport.resume_reading()
            self._parse()

    def _fail(self, code: int) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame with the reason, then
        close the transport without waiting."""
        if self.state == OPEN:
            self._write(frame(OP_CLOSE, close_payload(code)))
        self._disconnect(code)
        self._cancel_timer()
        self.state = CLOSED
        self.buf = b""
        self.frag = None
        self._close_transport()

    # -- keepalive ---------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        self._stop_keepalive()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _start_keepalive(self) -> None:
        interval = self.config.ws_ping_interval
        if interval:
            Keepalive.of(self.loop, interval).add(self)

    def _stop_keepalive(self) -> None:
        keepalive = _KEEPALIVES.get(self.loop)
        if keepalive is not None:
            keepalive.discard(self)

    def ping_due(self) -> bool:
        """Keepalive's turn for this socket: False if it should be dropped."""
        if self.state != OPEN or self.disconnected:
            return False
        if self.ping_payload is not None and self.config.ws_ping_timeout:
            self._fail(INTERNAL_ERROR)  # the last ping went unanswered
            return False
        self.ping_payload = os.urandom(4)
        self._write(frame(OP_PING, self.ping_payload))
        return True

    def _queue(self, data: bytes) -> None:
        """A data frame, written with the others of this loop iteration in one write at
        its end: the hub sends a receiver a message and its unread total back to back,
        and under load several events; one system call each was ~10 % of the server's
        CPU at 500 messages/s with 1,000 sockets."""
        if self.disconnected or self.transport.is_closing():
            return
        if self.out is None:
            self.out = [data]
            self.loop.call_soon(self._flush)
        else:
            self.out.append(data)

    def _flush(self) -> None:
        out, self.out = self.out, None
        if out and not self.disconnected and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _write(self, data: bytes) -> None:
        """Now, after the data frames queued before it (a close, a pong, a ping)."""
        self._flush()
        if not self.disconnected and not self.transport.is_closing():
            self.transport.write(data)

    def _close_transport(self) -> None:
        self._flush()
        self.transport.close()


class Keepalive:
    """Pings the open sockets of one event loop: each socket in one of `interval` slices,
    one slice a second, so a socket is pinged every `interval` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.slots: list[set[LeanWebSocketProtocol]] = [
            set() for _ in range(max(1, round(interval)))
        ]
        self.tick_seconds = interval / len(self.slots)
        self.turn = 0
        self.where: dict[LeanWebSocketProtocol, int] = {}
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> "Keepalive":
        keepalive = _KEEPALIVES.get(loop)
        if keepalive is None:
            keepalive = _KEEPALIVES[loop] = cls(loop, interval)
        return keepalive

    def add(self, proto: LeanWebSocketProtocol) -> None:
        slot = (self.turn - 1) % len(self.slots)  # a full interval from now
        self.slots[slot].add(proto)
        self.where[proto] = slot
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick_seconds, self._tick)

    def discard(self, proto: LeanWebSocketProtocol) -> None:
        slot = self.where.pop(proto, None)
        if slot is not None:
            self.slots[slot].discard(proto)

    def _tick(self) -> None:
        self.timer = None
        slot = self.slots[self.turn]
        self.turn = (self.turn + 1) % len(self.slots)
        for proto in list(slot):
            try:
                keep = proto.ping_due()
            except Exception:  # one socket's failure is not everyone's
                log.exception("WebSocket keepalive failed")
                keep = False
            if not keep:
                self.discard(proto)
        if self.where:
            self.timer = self.loop.call_later(self.tick_seconds, self._tick)


_KEEPALIVES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Keepalive]" = (
    weakref.WeakKeyDictionary()
)


def uvicorn_ws_options() -> dict[str, Any]:
    """The WebSocket settings `serve` runs uvicorn with (and the tests' servers too)."""
    return {
        "ws": LeanWebSocketProtocol,
        "ws_max_size": 4096,  # the hub's limit (realtime/hub.py MAX_INCOMING_BYTES)
        "ws_per_message_deflate": False,
    }
