"""`confide export` (EX1-EX6 from the command line, with a progress bar) and
`confide audit export` (the audit trail's CSV, as the API's `GET /audit.csv`)."""

import csv
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyzipper  # type: ignore[import-untyped]
from sqlalchemy import select

from confide.runtime import build_runtime
from confide.services import audit_trail
from confide.store.tables import AuditRow
from tests.conftest import TEST_MASTER_KEY, make_settings
from tests.personas import World, build_world, start

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"


@pytest.fixture
def cli_world(tmp_path: Path) -> Iterator[tuple[World, Path, str]]:
    if ON_POSTGRES:
        pytest.skip("the CLI runs against a SQLite data folder of its own")
    runtime = build_runtime(make_settings(tmp_path))
    world = build_world(runtime)
    canary = f"PHICANARY-{uuid.uuid4().hex}"
    conv = start(world, "carl", client="alex", text=f"{canary} one").conversation.id
    r = world.api("alex").post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": f"{canary} two", "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    start(world, "carl", members=("sam",), text=f"{canary} team")
    runtime.close()
    yield world, tmp_path, canary
    runtime.close()


def confide(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDE_")}
    env.update(
        CONFIDE_MASTER_KEY=TEST_MASTER_KEY,
        CONFIDE_DEMO="true",
        CONFIDE_FAST_PASSWORD_HASHING="true",
        COLUMNS="250",
        NO_COLOR="1",
        TYPER_STANDARD_TRACEBACK="1",
    )
    exe = Path(sys.prefix) / "bin" / "confide"
    return subprocess.run(
        [str(exe), *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ex1_ex3_cli_export_writes_the_archive_and_prints_the_password_once(
    cli_world: tuple[World, Path, str], tmp_path: Path
):
    world, data_dir, canary = cli_world
    out = tmp_path / "practice.zip"
    result = confide(data_dir, "export", "--as", world.emails["priya"], "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Export \d+ ready: 3 messages", result.stdout), result.stdout
    password = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", password), result.stdout
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    with pyzipper.AESZipFile(out) as zf:
        zf.setpassword(password.encode())
        text = "".join(zf.read(n).decode() for n in zf.namelist())
    assert f"{canary} one" in text and f"{canary} two" in text and f"{canary} team" in text
    runtime = build_runtime(make_settings(data_dir))
    try:
        with runtime.db.engine.connect() as conn:
            rows = conn.execute(
                select(AuditRow.action, AuditRow.via, AuditRow.authenticated_entity)
                .where(AuditRow.chain_id == world.practice_a, AuditRow.target_kind == "export")
                .order_by(AuditRow.seq)
            ).all()
    finally:
        runtime.close()
    assert [r.action for r in rows] == [
        "export.requested",
        "export.generated",
        "export.downloaded",
    ]
    assert rows[0].via == "cli" and rows[0].authenticated_entity.startswith("cli:")


def test_ex6_cli_export_of_one_clinician(cli_world: tuple[World, Path, str], tmp_path: Path):
    world, data_dir, _canary = cli_world
    out = tmp_path / "betty.zip"
    result = confide(
        data_dir,
        "export",
        "--as",
        world.emails["olivia"],
        "--clinician",
        world.emails["betty"],
        "--no-password",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not password-protected" in result.stdout
    assert "Export" in result.stdout and "ready: 0 messages" in result.stdout
    with pyzipper.AESZipFile(out) as zf:
        assert zf.namelist() == []


@pytest.mark.parametrize("who", ["pete", "carl"])
def test_ex1_cli_export_refuses_members_without_export_permission(
    who: str, cli_world: tuple[World, Path, str]
):
    world, data_dir, _canary = cli_world
    result = confide(data_dir, "export", "--as", world.emails[who])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not_permitted" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_rc1_cli_audit_export_matches_the_api_csv(
    cli_world: tuple[World, Path, str], tmp_path: Path
):
    world, data_dir, canary = cli_world
    out = tmp_path / "audit.csv"
    result = confide(data_dir, "audit", "export", "--as", world.emails["olivia"], "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert tuple(rows[0]) == audit_trail.CSV_HEADER
    actions = [r[8] for r in rows[1:]]
    assert {"message.sent", "practice.created", "member.added"} <= set(actions)
    assert f"{len(rows) - 1:,} rows written" in result.stdout
    assert canary not in out.read_text()
    # Filters as in the API, to standard output.
    result = confide(
        data_dir, "audit", "export", "--as", world.emails["priya"], "--action", "message."
    )
    assert result.returncode == 0, result.stderr
    lines = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert lines[0] == list(audit_trail.CSV_HEADER)
    assert lines[1:] and all(r[8].startswith("message.") for r in lines[1:])


@pytest.mark.parametrize(
    ("who", "args", "code"),
    [
        ("carl", (), "not_permitted"),
        ("olivia", ("--from", "yesterday"), "invalid_time"),
        ("olivia", ("--action", "DROP TABLE"), "invalid_action"),
    ],
)
def test_rc1_cli_audit_export_refusals_are_clear(
    who: str, args: tuple[str, ...], code: str, cli_world: tuple[World, Path, str]
):
    world, data_dir, _canary = cli_world
    result = confide(data_dir, "audit", "export", "--as", world.emails[who], *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert code in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_unknown_member_is_a_clear_error(cli_world: tuple[World, Path, str]):
    _world, data_dir, _canary = cli_world
    for args in (("export",), ("audit", "export")):
        result = confide(data_dir, *args, "--as", "nobody@example.test")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "No active team member" in result.stdout
