"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, can be
taken down and brought back on the same port, and can be slowed down; plus helpers to
run the job runner against it."""

import asyncio
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from confide.jobs.mail import SmtpMailer
from confide.jobs.notify import default_registry
from confide.jobs.runner import JobContext, JobRunner
from confide.runtime import Runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None
        return str(part.get_content())

    def link(self) -> str:
        """The first https link of the plain-text part."""
        found = re.search(r"https?://\S+", self.text())
        assert found, self.text()
        return found.group(0)


@dataclass
class SmtpSink:
    port: int = field(default_factory=free_port)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=off"

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if address in r.rcpt_tos]

    def wait_for(self, address: str, n: int = 1, timeout: float = 10.0) -> list[Received]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.to(address)
            if len(got) >= n:
                return got
            time.sleep(0.02)
        return self.to(address)


def make_runner(runtime: Runtime, sink: SmtpSink, **kw: Any) -> JobRunner:
    ctx = JobContext(runtime.db, runtime.settings, SmtpMailer(sink.url))
    kw.setdefault("backoff_base", 0.05)
    kw.setdefault("backoff_cap", 0.5)
    kw.setdefault("lease", timedelta(seconds=30))
    kw.setdefault("concurrency", 8)
    return JobRunner(ctx, default_registry(), **kw)


def drain(runner: JobRunner) -> int:
    return asyncio.run(runner.drain())
