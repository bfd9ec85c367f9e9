"""The lean WebSocket protocol writes the data frames of one loop iteration together,
and never reorders them with a control frame or the close (web/ws_protocol.py)."""

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from confide.web.ws_protocol import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    OPEN,
    LeanWebSocketProtocol,
    close_payload,
    frame,
)


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never called here
    raise AssertionError


def _open(loop: asyncio.AbstractEventLoop) -> tuple[LeanWebSocketProtocol, Transport]:
    proto = LeanWebSocketProtocol(Config(app=_app), ServerState(), {}, _loop=loop)
    transport = Transport()
    proto.transport = transport  # type: ignore[assignment]
    proto.state = OPEN
    return proto, transport


def _text(t: str) -> bytes:
    return frame(OP_TEXT, t.encode())


def test_nt5_frames_sent_back_to_back_go_out_in_one_write_in_order():
    async def run() -> list[bytes]:
        proto, transport = _open(asyncio.get_running_loop())
        for t in ("a message", "its unread total", "ü"):
            await proto.send({"type": "websocket.send", "text": t})
        assert transport.writes == []  # at the end of this loop iteration
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(run()) == [_text("a message") + _text("its unread total") + _text("ü")]


def test_nt5_a_control_frame_or_the_close_follows_the_data_queued_before_it():
    async def run() -> tuple[list[bytes], bool]:
        proto, transport = _open(asyncio.get_running_loop())
        await proto.send({"type": "websocket.send", "text": "one"})
        proto._write(frame(OP_PING, b"ping"))  # as the keepalive writes a ping: at once
        await proto.send({"type": "websocket.send", "text": "two"})
        await proto.send({"type": "websocket.close", "code": 1000})
        await asyncio.sleep(0)  # nothing left to write after the close
        return transport.writes, transport.closed

    writes, _ = asyncio.run(run())
    assert writes == [
        _text("one"),
        frame(OP_PING, b"ping"),
        _text("two"),
        frame(OP_CLOSE, close_payload(1000)),
    ]


def test_nt5_frames_queued_when_the_connection_is_lost_are_dropped():
    async def run() -> list[bytes]:
        proto, transport = _open(asyncio.get_running_loop())
        await proto.send({"type": "websocket.send", "text": "late"})
        proto.connection_lost(None)
        await asyncio.sleep(0)
        return transport.writes

    assert asyncio.run(run()) == []
