"""`confide member reset-second-factor`: PA4 recovery when nobody in the practice can
reset (the account owner lost both the authenticator and the recovery codes)."""

import os
from dataclasses import replace
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

from confide.domain.actors import Via
from confide.runtime import build_runtime
from confide.services import second_factor, sessions
from confide.store.tables import AuditRow
from confide.store.uow import unit_of_work
from tests.conftest import make_settings
from tests.integration.test_export_cli import confide
from tests.personas import build_world

pytestmark = pytest.mark.skipif(
    os.environ.get("CONFIDE_TEST_DATABASE") == "postgres",
    reason="the CLI runs against a SQLite data folder of its own",
)


def test_pa4_operator_resets_the_owners_second_factor_from_the_command_line(tmp_path: Path):
    runtime = build_runtime(make_settings(tmp_path))
    world = build_world(runtime)
    olivia = world.actor("olivia")
    with unit_of_work(runtime.db) as uow:
        secret = second_factor.begin_enrollment(uow, olivia).secret
    with unit_of_work(runtime.db) as uow:
        second_factor.confirm_enrollment(uow, olivia, code=pyotp.TOTP(secret).now())
    with unit_of_work(runtime.db) as uow:  # signed in on one device
        sessions.start_session(uow, replace(olivia, via=Via.PASSWORD_TOTP))
    runtime.close()

    done = confide(tmp_path, "member", "reset-second-factor", world.emails["olivia"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Second factor removed; 1 session(s) ended" in done.stdout

    runtime = build_runtime(make_settings(tmp_path))
    try:
        with unit_of_work(runtime.db, write=False) as uow:
            assert not uow.signin.has_second_factor(olivia.practice_id, olivia.party.id)
            row = uow.conn.execute(
                select(AuditRow.__table__).where(AuditRow.action == "second_factor.reset")
            ).one()
        assert row.target_id == olivia.party.id
        assert row.actor_kind == "system" and row.via == "cli"
        assert str(row.authenticated_entity).startswith("cli:")
    finally:
        runtime.close()

    again = confide(tmp_path, "member", "reset-second-factor", world.emails["olivia"])
    assert again.returncode == 1 and "No second factor is set up" in again.stdout
    nobody = confide(tmp_path, "member", "reset-second-factor", "nobody@example.test")
    assert nobody.returncode == 2 and "No team member has that email" in nobody.stdout
