"""`store/migrate.HEAD` names the newest migration; a start at HEAD skips Alembic."""

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from confide.store import migrate


def test_head_is_the_newest_migration_script():
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert scripts.get_heads() == [migrate.HEAD]


def test_a_database_at_head_is_not_migrated_again_and_alembic_stays_unloaded(tmp_path: Path):
    db = tmp_path / "db.sqlite"
    engine = create_engine(f"sqlite:///{db}")
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.HEAD
    engine.dispose()
    probe = (
        "import sys; from sqlalchemy import create_engine; from confide.store import migrate; "
        f"migrate.upgrade(create_engine('sqlite:///{db}')); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
