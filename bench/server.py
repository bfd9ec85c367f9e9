"""The real server as a subprocess (`confide serve`), and its memory from /proc."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.seed import Seeded

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def confide_command() -> list[str]:
    exe = Path(sys.executable).with_name("confide")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "confide.cli"]


class Server:
    """`confide serve --port P --data-dir D` in demo mode with the seed's master key."""

    def __init__(self, seeded: Seeded, log_path: Path) -> None:
        self.seeded = seeded
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
        env |= {
            "CONFIDE_DEMO": "true",
            "CONFIDE_MASTER_KEY": self.seeded.master_key,
            "CONFIDE_SECURE_COOKIES": "false",
            "CONFIDE_PUBLIC_ORIGIN": self.base,
            "CONFIDE_DATABASE_URL": "",  # SQLite in the data folder
            # T11's per-sender send rate (10/s, burst 20) is off: the benchmarks measure
            # the server's capacity, and their fixed-rate phases give each sender 10/s
            # on average (docs/benchmarks.md). The T39 admission bounds stay at their
            # defaults (docs/operations.md, "Overload").
            "CONFIDE_SEND_RATE_PER_SECOND": "0",
        }
        cmd = [
            *confide_command(),
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            self.seeded.data_dir,
        ]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early; see {self.log_path}")
            if self.alive(timeout=1.0):
                return
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer /healthz in {timeout:.0f} s")

    def alive(self, timeout: float = 3.0) -> bool:
        """Does /healthz answer? (A wedged server answers nothing.)"""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self, grace: float = 5.0) -> None:
        """SIGINT (uvicorn's graceful shutdown), SIGKILL after `grace` seconds: a
        wedged server never finishes its open requests."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None

    def restart(self) -> None:
        self.stop(grace=1.0)
        self.start()

    # -- memory ------------------------------------------------------------------------

    def status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux >= 4.0, our own process)."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def wait_settled(self, *, busy: float = 0.05, timeout: float = 180.0) -> float:
        """Wait until the server is idle (under `busy` of a core over half a second,
        twice in a row): a new server first works through what the seed left it (the
        notification jobs of the seeded history, the push consumer's walk over the event
        log), which would otherwise be measured as part of the first phases. Returns the
        seconds waited (`timeout` at most)."""
        t0 = time.monotonic()
        quiet = 0
        while quiet < 2 and time.monotonic() - t0 < timeout:
            c0 = self.cpu_seconds()
            time.sleep(0.5)
            quiet = quiet + 1 if self.cpu_seconds() - c0 < busy * 0.5 else 0
        return time.monotonic() - t0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


class RssSampler:
    """Samples the server's VmRSS every `every` seconds while running."""

    def __init__(self, server: Server, every: float = 0.05) -> None:
        self.server = server
        self.every = every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kb = max(self.peak_kb, self.server.status_kb("VmRSS"))
            except OSError:
                return
            self._stop.wait(self.every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
