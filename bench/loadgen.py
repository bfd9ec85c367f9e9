"""Load generators: wrk (closed loop, for saturation) and an open-loop asyncio client
(fixed rate, latency measured from each request's scheduled time, so a slow server
cannot hide its queueing: no coordinated omission)."""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.seed import Sender, message_text

# -- shared -------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def child_cpu_seconds() -> float:
    r = os.times()
    return r.children_user + r.children_system


@dataclass
class LoadResult:
    tool: str
    seconds: float
    requests: int
    statuses: dict[int, int]
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_s: float  # CPU the load generator used
    missed: int = 0  # open loop: scheduled requests never sent (server too slow)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def ok(self, status: int) -> int:
        return self.statuses.get(status, 0)


# -- wrk ----------------------------------------------------------------------------

_LUA_COMMON = r"""
local threads = {}
local next_tid = 1
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end
statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, '"' .. code .. '":' .. n) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":%d,"timeouts":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"max":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, table.concat(parts, ",")))
end
"""

_LUA_SEND = r"""
local senders = {SENDERS}
local texts = {TEXTS}
local prefix = "PREFIX"
local mine, n, turn = {}, 0, 0
function init(args)
  local nthreads = tonumber(args[1])
  for i, s in ipairs(senders) do
    if (i - 1) % nthreads == tid - 1 then
      local hdr = {}
      hdr["Content-Type"] = "application/json"
      hdr["Authorization"] = "Bearer " .. s[1]
      table.insert(mine, {"/api/v1/conversations/" .. s[2] .. "/messages", hdr})
    end
  end
end
function request()
  n = n + 1
  turn = turn % #mine + 1
  local s = mine[turn]
  local body = '{"text":"' .. texts[n % #texts + 1] .. '","idempotency_key":"' ..
    prefix .. tid .. "-" .. n .. '"}'
  return wrk.format("POST", s[1], s[2], body)
end
"""


def _lua_str(s: str) -> str:
    assert "]==]" not in s
    return "[==[" + s + "]==]"


def send_script(senders: list[Sender], prefix: str) -> str:
    rows = ", ".join("{" + _lua_str(s.token) + ", " + str(s.conversation_id) + "}" for s in senders)
    texts = ", ".join(_lua_str(json.dumps(message_text(i))[1:-1]) for i in range(1, 33))
    return (
        _LUA_SEND.replace("{SENDERS}", "{" + rows + "}")
        .replace("{TEXTS}", "{" + texts + "}")
        .replace("PREFIX", prefix)
        + _LUA_COMMON
    )


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, *, connections: int, threads: int, seconds: float, script: str) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        cpu0 = child_cpu_seconds()
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                path,
                url,
                "--",
                str(threads),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
        cpu = child_cpu_seconds() - cpu0
    finally:
        Path(path).unlink()
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON "))
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        tool=f"wrk -t{threads} -c{connections}",
        seconds=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        statuses={int(k): v for k, v in raw["statuses"].items()},
        errors=raw["errors"],
        p50_ms=raw["p50"] / 1000,
        p90_ms=raw["p90"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
        client_cpu_s=cpu,
    )


def wrk_get_script() -> str:
    return _LUA_COMMON


def wrk_send_script(senders: list[Sender], prefix: str) -> str:
    return send_script(senders, prefix)


# -- open-loop asyncio client ---------------------------------------------------------


class _Conn:
    """One keep-alive HTTP/1.1 connection with raw asyncio streams."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def post_bytes(host: str, port: int, path: str, token: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _open_loop(
    host: str,
    port: int,
    senders: list[Sender],
    *,
    rate: float,
    seconds: float,
    prefix: str,
    grace: float,
) -> tuple[list[float], dict[int, int], int, int, float]:
    """Request k is due at t0 + k/rate and goes out on sender k mod n's connection as
    soon as that connection is free; its latency counts from when it was due. Nothing
    is sent after `seconds + grace`; what was due and not sent by then is `missed`."""
    n_total = int(rate * seconds)
    n = len(senders)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    missed = 0
    t0 = time.perf_counter() + 0.2
    deadline = t0 + seconds + grace

    async def sender(i: int, s: Sender) -> None:
        nonlocal errors, missed
        conn = _Conn(host, port)
        path = f"/api/v1/conversations/{s.conversation_id}/messages"
        due = range(i, n_total, n)
        try:
            for j, k in enumerate(due):
                at = t0 + k / rate
                now = time.perf_counter()
                if now < at:
                    await asyncio.sleep(at - now)
                elif now > deadline:
                    missed += len(due) - j
                    return
                body = json.dumps(
                    {"text": message_text(k), "idempotency_key": f"{prefix}{i}-{k}"}
                ).encode()
                raw = post_bytes(host, port, path, s.token, body)
                try:
                    status, _ = await asyncio.wait_for(
                        conn.request(raw), timeout=max(1.0, deadline - time.perf_counter())
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    errors += 1  # no answer by the deadline (or a broken connection)
                    missed += len(due) - j - 1
                    return
                latencies.append(time.perf_counter() - at)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    await asyncio.gather(*(sender(i, s) for i, s in enumerate(senders)))
    return latencies, statuses, errors, missed, time.perf_counter() - t0


def run_open_loop(
    host: str,
    port: int,
    senders: list[Sender],
    *,
    rate: float,
    seconds: float,
    prefix: str,
    grace: float = 5.0,
) -> LoadResult:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    cpu0 = time.process_time()
    lat, statuses, errors, missed, elapsed = runner(
        _open_loop(host, port, senders, rate=rate, seconds=seconds, prefix=prefix, grace=grace)
    )
    cpu = time.process_time() - cpu0
    lat.sort()
    return LoadResult(
        tool=f"asyncio open loop, {len(senders)} connections",
        seconds=elapsed,
        requests=len(lat),
        statuses=statuses,
        errors=errors,
        p50_ms=percentile(lat, 50) * 1000,
        p90_ms=percentile(lat, 90) * 1000,
        p99_ms=percentile(lat, 99) * 1000,
        max_ms=(lat[-1] * 1000) if lat else float("nan"),
        client_cpu_s=cpu,
        missed=missed,
        extra={"target_rate": rate},
    )


async def _closed_loop(
    host: str, port: int, senders: list[Sender], *, seconds: float, prefix: str, get_path: str
) -> tuple[list[float], dict[int, int], int, float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    async def sender(i: int, s: Sender) -> None:
        nonlocal errors
        conn = _Conn(host, port)
        path = f"/api/v1/conversations/{s.conversation_id}/messages"
        get = f"GET {get_path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        k = 0
        try:
            while (start := time.perf_counter()) < end:
                k += 1
                if get_path:
                    raw = get
                else:
                    body = json.dumps(
                        {"text": message_text(k), "idempotency_key": f"{prefix}{i}-{k}"}
                    ).encode()
                    raw = post_bytes(host, port, path, s.token, body)
                try:
                    status, _ = await asyncio.wait_for(
                        conn.request(raw), timeout=max(1.0, end + 5 - time.perf_counter())
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    errors += 1
                    return
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    await asyncio.gather(*(sender(i, s) for i, s in enumerate(senders)))
    return latencies, statuses, errors, time.perf_counter() - t0


def run_closed_loop(
    host: str, port: int, senders: list[Sender], *, seconds: float, prefix: str, get_path: str
) -> LoadResult:
    """The fallback when wrk is missing: the same 50 senders, back to back."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    cpu0 = time.process_time()
    lat, statuses, errors, elapsed = runner(
        _closed_loop(host, port, senders, seconds=seconds, prefix=prefix, get_path=get_path)
    )
    cpu = time.process_time() - cpu0
    lat.sort()
    return LoadResult(
        tool=f"asyncio closed loop, {len(senders)} connections",
        seconds=elapsed,
        requests=len(lat),
        statuses=statuses,
        errors=errors,
        p50_ms=percentile(lat, 50) * 1000,
        p90_ms=percentile(lat, 90) * 1000,
        p99_ms=percentile(lat, 99) * 1000,
        max_ms=(lat[-1] * 1000) if lat else float("nan"),
        client_cpu_s=cpu,
    )
