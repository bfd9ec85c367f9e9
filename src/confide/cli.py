"""The `confide` command: serve, migrate, demo, audit verify."""

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from confide.config import Settings

app = typer.Typer(help="Confide: secure messaging for therapy practices.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
console = Console()


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
    workers: int = 1,
) -> None:
    """Migrate the database, then serve the app with uvicorn."""
    import uvicorn

    from confide.runtime import build_runtime
    from confide.web.app import create_app

    settings = _settings(demo=demo or None, data_dir=data_dir)
    if settings.demo and "CONFIDE_PUBLIC_ORIGIN" not in os.environ:
        # Links in the demo's emails point at this server.
        settings = settings.model_copy(update={"public_origin": f"http://{host}:{port}"})
    runtime = build_runtime(settings)
    if settings.demo:
        from confide.demo import ensure_demo_practice

        ensure_demo_practice(runtime, console, origin=f"http://{host}:{port}")
    del workers  # one process per `serve`; scale out with several behind nginx (docs)
    uvicorn.run(
        create_app(runtime),
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        ws_max_size=4096,  # the hub refuses larger frames; uvicorn need not read them
        ws_per_message_deflate=False,  # small frames; ~44 KB per socket saved
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
