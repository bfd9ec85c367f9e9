"""The `confide` command: serve, migrate, demo, audit verify and export, export."""

import ctypes
import logging
import os
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from confide.config import Settings

if TYPE_CHECKING:
    from confide.domain.actors import Actor
    from confide.runtime import Runtime
    from confide.store.uow import UnitOfWork

app = typer.Typer(help="Confide: secure messaging for therapy practices.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
console = Console()


def _configure_logging(level: str) -> None:
    """The app's own loggers (`confide.*`) to stderr at the configured level. They carry
    ids and exception type names only, never health information (docs/security.md)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    app_log = logging.getLogger("confide")
    app_log.addHandler(handler)
    app_log.setLevel("DEBUG" if level.lower() == "trace" else level.upper())
    app_log.propagate = False


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate malloc arenas of their own (up to 8 per core):
    with the thread pool doing sessions' checks while sockets connect, memory that
    idle sockets leave behind stays spread over many half-empty arenas. Two arenas cut
    the server's memory per idle socket by about a third (docs/benchmarks.md). An
    explicit MALLOC_ARENA_MAX wins; elsewhere than glibc this does nothing."""
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(ctypes.c_int(-8), ctypes.c_int(arenas))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc (musl has no mallopt)


def _settings(demo: bool | None = None, data_dir: Path | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if demo is not None:
        overrides["demo"] = demo
        if demo:
            overrides.setdefault("secure_cookies", False)
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        console.print(f"[red]Configuration refused:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    demo: Annotated[
        bool,
        typer.Option(
            help="Create the demo practice if missing; relaxed cookie rules for plain http."
        ),
    ] = False,
    data_dir: Path | None = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Processes to serve with. Only 1: start several `confide serve` behind "
            "nginx on PostgreSQL and Redis to use more cores (docs/scale-out.md)."
        ),
    ] = 1,
) -> None:
    """Migrate the database, then serve the app with uvicorn."""
    if workers != 1:
        # Accepted before and silently ignored. One process per `serve`: the in-process
        # broker, the group committer and SQLite's single writer are per process.
        console.print(
            "[red]--workers must be 1:[/red] one `confide serve` is one process. To use "
            "more cores, run several behind nginx on PostgreSQL and Redis "
            "(docs/scale-out.md)."
        )
        raise typer.Exit(2)
    _limit_malloc_arenas()
    import uvicorn

    from confide.runtime import build_runtime
    from confide.web.app import create_app
    from confide.web.ws_protocol import uvicorn_ws_options

    settings = _settings(demo=demo or None, data_dir=data_dir)
    _configure_logging(settings.log_level)
    if settings.demo and "CONFIDE_PUBLIC_ORIGIN" not in os.environ:
        # Links in the demo's emails point at this server.
        settings = settings.model_copy(update={"public_origin": f"http://{host}:{port}"})
    runtime = build_runtime(settings)
    if settings.demo:
        from confide.demo import ensure_demo_practice

        ensure_demo_practice(runtime, console, origin=f"http://{host}:{port}")
    uvicorn.run(
        create_app(runtime),
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        # Our own lean WebSocket protocol (web/ws_protocol.py): frames up to 4 KiB, no
        # per-message deflate (small frames; ~44 KB per socket saved), nothing kept per
        # socket that an idle one does not use (docs/benchmarks.md).
        **uvicorn_ws_options(),
        proxy_headers=True,
        server_header=False,
    )


@app.command()
def worker(
    data_dir: Path | None = None,
    once: Annotated[bool, typer.Option(help="Run what is due now, then exit.")] = False,
    practice: Annotated[
        list[int] | None,
        typer.Option(help="Serve only these practices' jobs (repeatable); default: all."),
    ] = None,
) -> None:
    """Run background jobs (email) until stopped; start several on PostgreSQL.
    Set CONFIDE_RUN_JOBS=false on the `serve` processes to leave the jobs to workers."""
    import asyncio
    import signal

    from confide.jobs.notify import build_runner
    from confide.runtime import build_runtime

    runtime = build_runtime(_settings(data_dir=data_dir))
    runner = build_runner(runtime)
    if practice:
        runner.practices = frozenset(practice)

    async def main() -> None:
        if once:
            await runner.drain()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.start()
        console.print(f"Worker {runner.worker_id} running; Ctrl+C stops it.")
        await stop.wait()
        await runner.stop()

    try:
        asyncio.run(main())
    finally:
        runtime.close()


@app.command()
def migrate(data_dir: Path | None = None) -> None:
    """Bring the database schema up to date."""
    from confide.store import migrate as m
    from confide.store.db import make_engine

    settings = _settings(data_dir=data_dir)
    if not settings.is_server_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    m.upgrade(engine)
    engine.dispose()
    console.print("Database is up to date.")


@app.command()
def demo(data_dir: Path | None = None) -> None:
    """Create the demo practice (memorable people in every role) and print how to sign in."""
    from confide.demo import ensure_demo_practice
    from confide.runtime import build_runtime

    runtime = build_runtime(_settings(demo=True, data_dir=data_dir))
    ensure_demo_practice(runtime, console, origin="http://127.0.0.1:8000")
    runtime.close()


@app.command("new-master-key")
def new_master_key() -> None:
    """Print a new random master key for CONFIDE_MASTER_KEY."""
    from confide.store.crypto import new_master_key_text

    typer.echo(new_master_key_text())


@audit_app.command("verify")
def audit_verify(data_dir: Path | None = None) -> None:
    """Recompute the audit hash chains; exit 1 and list every problem found."""
    from confide.runtime import build_runtime
    from confide.store.repos.audit import verify_chains

    settings = _settings(data_dir=data_dir)
    if not settings.is_server_database:
        missing = [
            p
            for p in (settings.data_dir / "confide.db", settings.master_key_file)
            if not p.exists() and (p.name != "master.key" or settings.master_key is None)
        ]
        if missing:
            console.print(f"[red]Nothing to verify:[/red] {missing[0]} does not exist.")
            raise typer.Exit(2)
    runtime = build_runtime(settings, run_migrations=False)
    with runtime.db.engine.connect() as conn:
        report = verify_chains(conn, runtime.db.keys)
    runtime.close()
    for p in report.problems:
        console.print(f"[red]chain {p.chain_id} seq {p.seq} (row {p.row_id}):[/red] {p.problem}")
    if report.ok:
        console.print(f"Audit log intact: {report.rows:,} rows in {report.chains} chains.")
        return
    console.print(f"[red]{len(report.problems)} problems[/red] in {report.rows:,} rows.")
    raise typer.Exit(1)


member_app = typer.Typer(help="Team members, for the server's operator.", no_args_is_help=True)
app.add_typer(member_app, name="member")


@member_app.command("reset-second-factor")
def member_reset_second_factor(
    email: Annotated[str, typer.Argument(help="The team member's sign-in email.")],
    data_dir: Path | None = None,
) -> None:
    """Remove a team member's second factor when nobody in the practice can (PA4: the
    account owner lost the authenticator and the recovery codes). Their sessions end;
    they sign in with their password and, if the practice requires it, set up a new
    second factor at once. Audited, naming the operating-system user who ran it."""
    import getpass

    from confide.domain.actors import Actor, Via
    from confide.domain.errors import DomainError
    from confide.services import second_factor
    from confide.store.uow import unit_of_work

    runtime = _runtime(data_dir)
    try:
        with unit_of_work(runtime.db, write=False) as uow:
            found = uow.people.find_login(email)
        if found is None:
            console.print("[red]No team member has that email.[/red]")
            raise typer.Exit(2)
        member = found[0]
        operator = Actor(
            member.practice_id,
            Actor.system(member.practice_id).party,
            Via.CLI,
            authenticated_entity=f"cli:{getpass.getuser()}",
        )
        with unit_of_work(runtime.db) as uow:
            ended = second_factor.operator_reset(uow, operator, member.id)
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        runtime.close()
    console.print(
        f"Second factor removed; {ended} session(s) ended. The member signs in with their "
        "password and sets up a new second factor if the practice requires one."
    )


# --- data export and audit-log export from the command line (issue 7) ---------------------


def _operator_actor(runtime: "Runtime", email: str) -> "Actor":
    """The team member the command acts as (their permissions apply, and the audit log
    names them), authenticated by whoever runs the command on the server."""
    import getpass

    from confide.domain.actors import Actor, Via
    from confide.store.uow import unit_of_work

    with unit_of_work(runtime.db, write=False) as uow:
        found = uow.people.find_login(email)
    if found is None or not found[0].active:
        console.print("[red]No active team member has that email.[/red]")
        raise typer.Exit(2)
    member = found[0]
    return Actor(
        member.practice_id, member.party, Via.CLI, authenticated_entity=f"cli:{getpass.getuser()}"
    )


def _runtime(data_dir: Path | None) -> "Runtime":
    from confide.runtime import build_runtime

    return build_runtime(_settings(data_dir=data_dir))


AsOption = Annotated[
    str, typer.Option("--as", help="Email of the team member to act as (their permissions apply).")
]


@app.command("export")
def export_command(
    as_email: AsOption,
    clinician_email: Annotated[
        str | None,
        typer.Option("--clinician", help="Export one clinician's clients (EX6) instead of all."),
    ] = None,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Make an unprotected zip (audited; warned).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Copy the finished archive here (audited as a download).")
    ] = None,
    data_dir: Path | None = None,
) -> None:
    """Export the practice's secure messages (EX1-EX6) now, with a progress bar; prints
    the archive password once."""
    import shutil

    from rich.progress import Progress

    from confide.domain.errors import DomainError
    from confide.domain.exports import ExportScope
    from confide.jobs import exports as jobs
    from confide.services import exports
    from confide.store.uow import unit_of_work

    runtime = _runtime(data_dir)
    export_dir = runtime.settings.resolved_export_dir
    try:
        actor = _operator_actor(runtime, as_email)
        clinician_id = None
        if clinician_email is not None:
            with unit_of_work(runtime.db, write=False) as uow:
                found = uow.people.find_login(clinician_email)
            if found is None or found[0].practice_id != actor.practice_id:
                console.print("[red]No clinician of this practice has that email.[/red]")
                raise typer.Exit(2)
            clinician_id = found[0].id
        with unit_of_work(runtime.db) as uow:
            made = exports.request_export(
                uow,
                actor,
                scope=ExportScope.CLINICIAN if clinician_id else ExportScope.PRACTICE,
                clinician_id=clinician_id,
                password_protected=not no_password,
            )
        if made.warning:
            console.print(f"[yellow]Warning:[/yellow] {made.warning}")
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"Export {made.export.id}", total=100)
            outcome = jobs.run_next_export(
                runtime.db,
                export_dir=export_dir,
                only=made.export.id,
                on_progress=lambda pct: bar.update(task, completed=pct),
            )
            bar.update(task, completed=100)
        with unit_of_work(runtime.db, write=False) as uow:
            state = exports.get_export(uow, actor, made.export.id)
        if outcome != "ready":
            console.print(
                f"[red]Export {state.id} {state.status.value}[/red] ({state.error or outcome})."
            )
            raise typer.Exit(1)
        console.print(
            f"Export {state.id} ready: {state.messages:,} messages, {state.file_size:,} bytes; "
            f"download within 72 hours (until {state.expires_at:%Y-%m-%d %H:%M} UTC)."
        )
        if out is not None:
            with unit_of_work(runtime.db) as uow:
                _, path = exports.begin_download(uow, actor, state.id, export_dir=export_dir)
            shutil.copyfile(path, out)
            out.chmod(0o600)
            console.print(f"Archive written to {out}")
        if made.password:
            console.print("Password (shown once; Confide keeps no copy):")
            typer.echo(made.password)
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red] ({exc.code})")
        raise typer.Exit(1) from None
    finally:
        runtime.close()


@audit_app.command("export")
def audit_export(
    as_email: AsOption,
    out: Annotated[
        Path | None, typer.Option(help="Write the CSV to this file (default: standard output).")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="member:12, client:7, or a kind")] = None,
    action: Annotated[str | None, typer.Option(help='message.sent, or a prefix "message."')] = None,
    target: Annotated[str | None, typer.Option(help="conversation:5, client:7, or a kind")] = None,
    at_from: Annotated[
        str | None, typer.Option("--from", help="ISO 8601 with offset, inclusive")
    ] = None,
    at_to: Annotated[
        str | None, typer.Option("--to", help="ISO 8601 with offset, exclusive")
    ] = None,
    data_dir: Path | None = None,
) -> None:
    """The practice's audit log as CSV: the columns, filters and formula neutralisation
    of `GET /api/v1/audit.csv`; audited (`audit_log.exported`)."""
    import sys

    from confide.domain.errors import DomainError
    from confide.services import audit_trail
    from confide.store.uow import unit_of_work

    runtime = _runtime(data_dir)
    try:
        me = _operator_actor(runtime, as_email)
        filters = audit_trail.build_filters(
            actor=actor, action=action, target=target, at_from=at_from, at_to=at_to
        )
        with unit_of_work(runtime.db) as uow:
            export = audit_trail.begin_export(uow, me, filters)

        def read() -> "AbstractContextManager[UnitOfWork]":
            return unit_of_work(runtime.db, write=False)

        lines = audit_trail.csv_lines(export, read)
        if out is None:
            for line in lines:
                sys.stdout.write(line)
        else:
            with out.open("w", encoding="utf-8", newline="") as f:
                rows = sum(1 for line in lines if f.write(line) is not None) - 1
            console.print(f"{rows:,} rows written to {out}", highlight=False)
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red] ({exc.code})")
        raise typer.Exit(1) from None
    finally:
        runtime.close()
