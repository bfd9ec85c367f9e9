"""Run every benchmark and rewrite docs/benchmarks.md.

    python -m bench.run            # about 3 minutes, plus the real-time section
    python -m bench.run --quick    # about 1 minute: shorter phases, fewer samples
    python -m bench.run --only realtime   # the real-time section alone (bench/realtime.py)

Measurements only: nothing here passes or fails. The figures land in the table of
docs/benchmarks.md beside the targets they are meant for.
"""

import argparse
import collections
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import pagination, realtime, send
from bench.seed import Seeded, seed
from bench.server import ROOT, Server

DOC = ROOT / "docs" / "benchmarks.md"
EXPORT_START = "<!-- export-bench:start -->"  # bench/export.py's section
EXPORT_END = "<!-- export-bench:end -->"

TARGET_RATE = 2000.0
TARGET_P99_MS = 50.0
TARGET_RATIO = 0.40
TARGET_NEWEST_MS = 5.0
TARGET_OLDER_MS = 10.0
TARGET_RSS_MB = 150.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = "not installed"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        wrk = (out.stdout or out.stderr).split("[")[0].strip() or "installed"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    if commit and dirty:
        commit += " with uncommitted changes in src/"
    return {
        "speed": f"{core_speed():.1f}",
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": wrk,
        "commit": commit or "?",
        "kernel": platform.release(),
    }


def cpu_share(seconds: float = 0.5) -> float:
    """The share of one core a busy Python loop gets now (1.0 on an idle machine): how
    much other work on this shared machine competes with the benchmark."""
    w0, c0 = time.perf_counter(), time.process_time()
    x = 0
    while time.perf_counter() - w0 < seconds:
        for i in range(10_000):
            x += i
    return (time.process_time() - c0) / (time.perf_counter() - w0)


def core_speed(seconds: float = 0.5) -> float:
    """Millions of iterations of a fixed pure-Python loop per second of CPU: how fast one
    core of this machine runs Python, so that runs on different machines (or the same
    machine on another day) can be put side by side. Measured on CPU time, so other work
    on the machine does not lower it much."""
    c0 = time.process_time()
    n = 0
    while time.process_time() - c0 < seconds:
        x = 0
        for i in range(100_000):
            x += i
        n += 100_000
    return n / (time.process_time() - c0) / 1e6


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt_ms(x: float) -> str:
    if x != x:  # NaN
        return "–"
    if x < 10:
        return f"{x:.2f}"
    return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def summarize_dump(path: str) -> str:
    """Threads of a wedged server grouped by the code they wait in."""
    if not path or not Path(path).exists():
        return ""
    blocks = Path(path).read_text().split("\nThread ")[1:]
    counts: collections.Counter[str] = collections.Counter()
    for b in blocks:
        frames = [ln.strip() for ln in b.strip().splitlines()[1:]]
        counts[" ← ".join(f.split(" (")[0] for f in frames[:4])] += 1
    return "; ".join(f"{n} × `{k}`" for k, n in counts.most_common(4))


def write_doc(
    *,
    quick: bool,
    command: str,
    started: datetime,
    elapsed: float,
    info: dict[str, str],
    load_before: str,
    load_after: str,
    cpu_before: float,
    cpu_after: float,
    seeded: Seeded,
    sres: send.SendResults,
    pag_inproc: list[pagination.Timing],
    pag_http: list[pagination.Timing],
    rt: tuple[list[realtime.Delivery], list[realtime.Idle]] | None = None,
) -> str:
    target = sres.target_connections
    healthz = sres.get(f"healthz c={target}")
    top = sres.get(f"send c={target}")
    fixed = next(
        (p for p in sres.phases if p.name.startswith("fixed ") and p.connections == target),
        None,
    )
    best = max(sres.saturation(), key=lambda p: p.load.rate, default=None)
    ratio = (top.load.rate / healthz.load.rate) if top and healthz and healthz.load.rate else 0
    ratio_best = (
        (best.load.rate / healthz.load.rate) if best and healthz and healthz.load.rate else 0
    )
    http = {t.what: t for t in pag_http}
    svc = {t.what: t for t in pag_inproc if t.level == "service"}
    send_phases = [p for p in sres.phases if p.stored is not None]
    rss_peak = max((p.rss_peak_kb for p in send_phases), default=0) / 1024

    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(
        "Written by `python -m bench.run` (`bin/dev bench`); every run rewrites this file. "
        "Measurements only: nothing here passes or fails a build. The machine is shared "
        "and noisy, so compare runs by their order of magnitude, and read the load "
        "average beside them."
    )
    add("")
    add(f"- **Date:** {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s")
    note = " (quick: shorter phases, fewer samples)" if quick else ""
    add(f"- **Command:** `{command}`{note}")
    add(
        f"- **Machine:** {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}, {info['wrk']}; load generator "
        "on the same machine; load average (1/5/15 min) "
        f"{load_before} before, {load_after} after; a busy loop got {cpu_before:.0%} of a "
        f"core before and {cpu_after:.0%} after (100 % on an idle machine); one core runs "
        f"{info['speed']} M iterations of a plain Python loop per CPU-second (the speed "
        "reference for comparing runs: the figures below scale with it)"
    )
    add(
        f"- **Code:** commit {info['commit']}; server `confide serve` (uvicorn, one process, "
        "SQLite WAL) in demo mode on 127.0.0.1, with T11's per-sender send rate off "
        "(`CONFIDE_SEND_RATE_PER_SECOND=0`: the benchmarks measure capacity) and T39's "
        "admission bounds at their defaults (512 requests, 256 queued sends, 20,000 "
        "sockets; docs/operations.md)"
    )
    add(
        f"- **Data:** one practice, {len(seeded.senders)} sender clinicians with API tokens "
        "(each with their own conversation, half with their client, half with a colleague), "
        f"{seeded.big_messages:,} messages in the pagination conversation, "
        f"{seeded.practice_conversations:,} other conversations of the practice (2 "
        "participants each, no messages: the practice's size, which no lookup by key may "
        f"walk); seeded in "
        f"{sum(seeded.seconds.values()):.0f} s"
    )
    add("")
    add("## Against the targets")
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    if top:
        wedged = "" if top.alive_after else " (server wedged: see below)"
        add(
            f"| ≥ {TARGET_RATE:,.0f} messages/s with {target} concurrent senders | "
            f"{top.load.rate:,.0f} messages/s{wedged}; best of any concurrency: "
            f"{best.load.rate if best else 0:,.0f}/s at c={best.connections if best else 0} | "
            f"{yes(top.load.rate >= TARGET_RATE)} |"
        )
    if fixed:
        rate = fixed.load.extra.get("target_rate", 0.0)
        add(
            f"| p99 < {TARGET_P99_MS:.0f} ms at 500 messages/s | at {rate:.0f}/s: p99 "
            f"{fmt_ms(fixed.load.p99_ms)} ms, p50 {fmt_ms(fixed.load.p50_ms)} ms over "
            f"{fixed.load.requests:,} answered; {fixed.load.missed:,} never sent, "
            f"{fixed.load.errors} unanswered | "
            f"{yes(fixed.load.p99_ms < TARGET_P99_MS and not fixed.load.missed)} |"
        )
    if healthz and top:
        cpu_ratio = (
            healthz.server_cpu_ms_per_request / best.server_cpu_ms_per_request
            if best and best.load.requests
            else 0.0
        )
        add(
            f"| send ≥ {TARGET_RATIO:.0%} of the empty endpoint | {ratio:.1%} at c={target} "
            f"({top.load.rate:,.0f} / {healthz.load.rate:,.0f}); best: {ratio_best:.1%}; by "
            f"server CPU per request: {cpu_ratio:.1%} "
            f"({fmt_ms(healthz.server_cpu_ms_per_request)} / "
            f"{fmt_ms(best.server_cpu_ms_per_request if best else float('nan'))} ms) | "
            f"{yes(ratio >= TARGET_RATIO)} |"
        )
    if "newest" in http:
        add(
            f"| newest 50 of {seeded.big_messages:,}: p50 < {TARGET_NEWEST_MS:.0f} ms | "
            f"HTTP p50 {fmt_ms(http['newest'].p50_ms)} ms (service in process "
            f"{fmt_ms(svc['newest'].p50_ms)} ms) | "
            f"{yes(http['newest'].p50_ms < TARGET_NEWEST_MS)} |"
        )
    if "older" in http:
        add(
            f"| any older page < {TARGET_OLDER_MS:.0f} ms | "
            f"HTTP p95 {fmt_ms(http['older'].p95_ms)} ms, p50 {fmt_ms(http['older'].p50_ms)} ms | "
            f"{yes(http['older'].p95_ms < TARGET_OLDER_MS)} |"
        )
    add(
        f"| server RSS < {TARGET_RSS_MB:.0f} MB under the send benchmark | peak {rss_peak:.0f} MB "
        f"(idle {sres.rss_idle_kb / 1024:.0f} MB) | {yes(0 < rss_peak < TARGET_RSS_MB)} |"
    )
    if rt is not None:
        lines.extend(realtime.target_rows(*rt))
    add("")
    add(
        "The empty endpoint is `GET /healthz`: an `async def` route returning a constant, "
        "through the same uvicorn, middleware and FastAPI layers as a send. Runs before "
        "2026-12-07 (commit 0fbc388) measured it as a plain `def`, which FastAPI runs in a "
        "worker thread: 2,400-2,900 answers/s on this machine where the real empty "
        "endpoint answers 8,800-11,500/s. Their ratios of 34-45 % were against that thread "
        "hop; against the empty endpoint the same sends were 10-12 %."
    )
    add("")

    add("## HTTP phases")
    add("")
    add(
        f"Load: {sres.load_tool}. *c* is the number of concurrent connections, each with "
        "its own sender (member token and conversation). Saturation phases are closed "
        "loop (a connection sends its next request when the answer arrives); fixed-rate "
        "phases are open loop, latency counted from when each request was due. *stored* "
        "counts the phase's messages (by idempotency key) / their `message.sent` audit "
        "rows / their `message.created` outbox rows, read from the database once the "
        "server settled; in brackets, messages stored whose 201 the load generator never "
        "read (in flight when it stopped). *ok*: the three counts are equal and every 201 "
        "is among them. *CPU/req* is server CPU time per answered request; *answers "
        "after*: whether /healthz answered within 3 s after the phase."
    )
    add("")
    add(
        "| phase | c | s | answered | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses | "
        "errors | stored | ok | server CPU/req | server RSS peak | answers after |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in sres.phases:
        st = ", ".join(f"{k}: {v:,}" for k, v in sorted(p.load.statuses.items())) or "–"
        stored = (
            f"{p.stored.messages:,} / {p.stored.audit_sent:,} / {p.stored.outbox_created:,}"
            + (f" ({p.unanswered_stored:+,})" if p.unanswered_stored else "")
            if p.stored
            else "–"
        )
        ok = "–" if p.verified is None else ("yes" if p.verified else "**no**")
        errs = f"{p.load.errors:,}" + (f" (+{p.load.missed:,} never sent)" if p.load.missed else "")
        add(
            f"| {p.name} | {p.connections} | {p.load.seconds:.1f} | {p.load.requests:,} | "
            f"{p.load.rate:,.0f} | {fmt_ms(p.load.p50_ms)} | {fmt_ms(p.load.p90_ms)} | "
            f"{fmt_ms(p.load.p99_ms)} | {fmt_ms(p.load.max_ms)} | {st} | {errs} | {stored} | "
            f"{ok} | {fmt_ms(p.server_cpu_ms_per_request)} ms | {p.rss_peak_kb / 1024:.0f} MB | "
            f"{'yes' if p.alive_after else '**wedged**'} |"
        )
    add("")
    wedged = [p for p in sres.phases if not p.alive_after]
    if wedged:
        add(
            "**Wedged:** after "
            + ", ".join(f"'{p.name}'" for p in wedged)
            + " the server answered nothing, not even /healthz, and was restarted for the "
            "next phase."
            + (
                ""
                if any(p.stuck_dump for p in wedged)
                else " (With py-spy on PATH the run records where its threads wait.)"
            )
        )
        for p in wedged:
            s = summarize_dump(p.stuck_dump)
            if s:
                add(f"Threads of the wedged server after '{p.name}' (py-spy): {s}.")
        add("")
    if sres.inprocess:
        ip = sres.inprocess
        add("## Send path in process")
        add("")
        add(
            f"`messaging.send_message` through a unit of work, one thread, no HTTP, each "
            "commit relaying its event as `serve` does: "
            f"{ip.sends:,} sends, **{ip.rate:,.0f} sends/s** ({ip.ms_per_send:.2f} ms each), "
            f"{ip.statements_per_send:.1f} SQL statements per send "
            "(as SQLite counts them: BEGIN and COMMIT included, an executemany once per "
            "row; the send's own statements run on the driver's cursor, store/hot.py). "
            "The HTTP rate of one process cannot pass this while writes are serialised."
        )
        add("")
    add("## Pagination")
    add("")
    add(
        f"Pages of {pagination.PAGE} from the {seeded.big_messages:,}-message conversation. "
        "*repo*: `list_messages` in a read transaction; *service*: "
        "`reading.open_conversation` (access checks, decryption, audited read, unread "
        "count; a write transaction); *http*: GET with `mark_read=false`, one keep-alive "
        "connection, one request at a time. *older*: `before_seq` uniform over the "
        "conversation. *cold reader*: a participant with every message unread."
    )
    add("")
    add("| level | page | n | p50 ms | p95 ms | mean ms |")
    add("|---|---|---|---|---|---|")
    for t in [*pag_inproc, *pag_http]:
        add(
            f"| {t.level} | {t.what} | {t.n} | {fmt_ms(t.p50_ms)} | {fmt_ms(t.p95_ms)} | "
            f"{fmt_ms(t.mean_ms)} |"
        )
    add("")
    if rt is not None:
        add(realtime.section(*rt, data=realtime_data(seeded)))
    return "\n".join(lines)


def realtime_data(seeded: Seeded) -> str:
    return (
        f"on the data above ({len(seeded.senders)} sender conversations, "
        f"{seeded.big_messages:,} messages in the big one)"
    )


def keep_sections(old: str, new: str, keep_realtime: bool) -> str:
    """The new doc, with what this run did not measure carried over from the old one:
    the real-time section (under --no-realtime) and bench/export.py's section."""
    out = new.rstrip("\n") + "\n"
    if keep_realtime and (start := old.find(realtime.SECTION)) >= 0:
        end = old.find("\n## ", start + len(realtime.SECTION))
        marker = old.find(EXPORT_START, start)
        stops = [i for i in (end, marker) if i >= 0]
        kept = old[start : min(stops)] if stops else old[start:]
        out = realtime.replace_section(out, kept)
    if EXPORT_START in old and EXPORT_END in old:
        section = old[old.index(EXPORT_START) : old.index(EXPORT_END) + len(EXPORT_END)]
        out = out.rstrip("\n") + "\n\n" + section + "\n"
    return out


def only_realtime(args: argparse.Namespace) -> int:
    """Seed a small data folder, run bench/realtime.py, and replace only the real-time
    section of docs/benchmarks.md (the other sections stay as the last full run left
    them)."""
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    info = machine()
    load_before, cpu_before = loadavg(), cpu_share()
    log(f"load average {load_before}; a busy loop gets {cpu_before:.0%} of a core")
    work = Path(tempfile.mkdtemp(prefix="confide-bench-rt-"))
    try:
        seeded = seed(
            work / "data",
            history=6 if args.quick else 20,
            clients_total=60 if args.quick else 200,
            big=1000,
            log=log,
        )
        rt = realtime.run(seeded, work, quick=args.quick, log=log)
        body = realtime.section(
            *rt,
            data=(
                f"{len(seeded.senders)} sender conversations seeded for it; run "
                f"{started:%Y-%m-%d %H:%M} UTC by `python -m bench.run --only realtime"
                f"{' --quick' if args.quick else ''}` in {time.perf_counter() - t0:.0f} s, "
                f"commit {info['commit']}, load average {load_before} before and "
                f"{loadavg()} after, a busy loop got {cpu_before:.0%} of a core before and "
                f"{cpu_share():.0%} after"
            ),
        )
        print()
        print(body)
        if not args.no_doc:
            DOC.write_text(realtime.replace_section(DOC.read_text(), body))
            log(f"wrote the real-time section of {DOC.relative_to(ROOT)}")
        return 0
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="about a minute: a smoke run")
    ap.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    ap.add_argument("--no-doc", action="store_true", help="print only; leave the doc alone")
    ap.add_argument(
        "--only", choices=["realtime"], help="one section alone (the doc keeps the others)"
    )
    ap.add_argument("--no-realtime", action="store_true", help="skip bench/realtime.py")
    args = ap.parse_args(argv)
    if args.only == "realtime":
        return only_realtime(args)
    command = "python -m bench.run" + (" --quick" if args.quick else "")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    info = machine()
    load_before = loadavg()
    cpu_before = cpu_share()
    log(
        f"{info['nproc']} cores, Python {info['python']}, SQLite {info['sqlite']}, "
        f"{info['wrk']}; load average {load_before}; a busy loop gets {cpu_before:.0%} of a core"
    )
    work = Path(tempfile.mkdtemp(prefix="confide-bench-"))
    data = work / "data"
    secs = 2.5 if args.quick else 10.0
    try:
        seeded = seed(
            data,
            history=6 if args.quick else 20,
            clients_total=60 if args.quick else 200,
            log=log,
        )
        log(f"seeded {data} in {sum(seeded.seconds.values()):.1f} s")

        inproc = send.inprocess_send(seeded, sends=150 if args.quick else 1000)
        log(
            f"in process: {inproc.rate:,.0f} sends/s ({inproc.ms_per_send:.2f} ms), "
            f"{inproc.statements_per_send:.1f} statements per send"
        )
        pag_inproc = pagination.inprocess(seeded, n=40 if args.quick else 300)
        for t in pag_inproc:
            log(f"pages {t.level} {t.what}: p50 {t.p50_ms:.2f} ms, p95 {t.p95_ms:.2f} ms")

        server = Server(seeded, work / "server.log")
        server.start()
        log(f"server settled (the seed's notification jobs done) in {server.wait_settled():.0f} s")
        try:
            sres = send.run_send_benchmarks(
                seeded,
                server,
                seconds=secs,
                sweep=(8,) if args.quick else (1, 8, 16),
                fixed_seconds=secs,
                fixed_grace=2.0 if args.quick else 5.0,
                half_capacity_run=not args.quick,
                workdir=work,
                log=log,
            )
            sres.inprocess = inproc
            if not server.alive():
                server.restart()
            pag_http = pagination.over_http(seeded, server.port, n=40 if args.quick else 300)
            for t in pag_http:
                log(f"pages {t.level} {t.what}: p50 {t.p50_ms:.2f} ms, p95 {t.p95_ms:.2f} ms")
        finally:
            server.stop()
        rt = None if args.no_realtime else realtime.run(seeded, work, quick=args.quick, log=log)
        doc = write_doc(
            quick=args.quick,
            command=command,
            started=started,
            elapsed=time.perf_counter() - t0,
            info=info,
            load_before=load_before,
            load_after=loadavg(),
            cpu_before=cpu_before,
            cpu_after=cpu_share(),
            seeded=seeded,
            sres=sres,
            pag_inproc=pag_inproc,
            pag_http=pag_http,
            rt=rt,
        )
        print()
        print(doc)
        if not args.no_doc:
            DOC.write_text(keep_sections(DOC.read_text() if DOC.exists() else "", doc, rt is None))
            log(f"wrote {DOC.relative_to(ROOT)}")
        return 0
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
