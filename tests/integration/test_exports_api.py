"""The practice data export (EX1-EX6) through the JSON API and the job that writes it:
who may export and download (EX1, EX3), the AES-256 zip and its password (EX3,
SECURITY-TESTS T33), what it holds (EX5, EX6: every message of its scope, in order,
removed ones marked with their text), the background states and a crash mid-run (EX4),
the 72-hour download window, and the audit rows (RC1)."""

import io
import re
import shutil
import subprocess
import time
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pyzipper  # type: ignore[import-untyped]
import time_machine
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select
from starlette.testclient import TestClient

from confide.jobs import exports as export_jobs
from confide.services import exports as export_service
from confide.store import migrate
from confide.store.db import make_engine
from confide.store.tables import AuditRow, Base, DataExportRow, MessageRow
from confide.web.app import create_app
from tests.personas import World, start

MISSING = 999_999_999
LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC\] ", re.M)
NAMES_A = (
    "Olivia Owens",
    "Carl Test",
    "Sam Test",
    "Betty Test",
    "Priya Test",
    "Alex Client",
    "Jordan Client",
    "Pat Parent",
)


def canary() -> str:
    return f"PHICANARY-{uuid.uuid4().hex}"


def send(world: World, who: str, conv: int, text: str) -> dict[str, Any]:
    r = world.api(who).post(
        f"/api/v1/conversations/{conv}/messages",
        json={"text": text, "idempotency_key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["message"])


def remove(world: World, who: str, conv: int, message_id: int) -> None:
    r = world.api(who).delete(f"/api/v1/conversations/{conv}/messages/{message_id}")
    assert r.status_code == 200, r.text


def request_export(world: World, who: str = "priya", **body: Any) -> dict[str, Any]:
    r = world.api(who).post("/api/v1/exports", json=body or {"scope": "practice"})
    assert r.status_code == 201, r.text
    return dict(r.json())


def run(world: World, export_id: int) -> str | None:
    return export_jobs.run_next_export(
        world.runtime.db, export_dir=world.runtime.settings.resolved_export_dir, only=export_id
    )


def status(world: World, export_id: int, who: str = "priya") -> dict[str, Any]:
    r = world.api(who).get(f"/api/v1/exports/{export_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def download(world: World, export_id: int, who: str = "priya") -> bytes:
    r = world.api(who).get(f"/api/v1/exports/{export_id}/download")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert re.fullmatch(
        r'attachment; filename="confide-export-\d{4}-\d{2}-\d{2}\.zip"',
        r.headers["content-disposition"],
    )
    return r.content


def audit_actions(world: World, target_id: int | None = None) -> list[str]:
    with world.runtime.db.engine.connect() as conn:
        stmt = select(AuditRow.action).where(
            AuditRow.chain_id == world.practice_a, AuditRow.target_kind == "export"
        )
        if target_id is not None:
            stmt = stmt.where(AuditRow.target_id == target_id)
        return list(conn.execute(stmt.order_by(AuditRow.seq)).scalars())


def messages_in_store(world: World) -> int:
    with world.runtime.db.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(MessageRow)
                .where(MessageRow.practice_id == world.practice_a)
            ).scalar_one()
        )


def files_of(data: bytes, password: str | None) -> dict[str, str]:
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        if password:
            zf.setpassword(password.encode())
        return {n: zf.read(n).decode() for n in zf.namelist()}


class Scene:
    """Practice A with client conversations (carl-alex, betty-pat about jordan), team
    conversations (carl-sam twice, carl-sam-priya once, betty-fiona), a multi-line
    message and a removed one; every text carries the canary."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.canary = canary()
        c = self.canary
        alex = start(world, "carl", client="alex", text=f"{c} first to alex")
        self.alex_conv = alex.conversation.id
        send(world, "alex", self.alex_conv, f"{c} alex answers\nover two lines")
        self.removed = send(world, "carl", self.alex_conv, f"{c} said too much")
        remove(world, "carl", self.alex_conv, self.removed["id"])
        send(world, "carl", self.alex_conv, f"{c} last to alex")
        jordan = start(world, "betty", client="jordan", contact="pat", text=f"{c} to pat")
        send(world, "pat", jordan.conversation.id, f"{c} pat answers")
        pair1 = start(world, "carl", members=("sam",), text=f"{c} carl-sam one")
        send(world, "sam", pair1.conversation.id, f"{c} sam replies")
        start(world, "sam", members=("carl",), text=f"{c} carl-sam two")
        start(world, "carl", members=("sam", "priya"), text=f"{c} the three of us")
        start(world, "betty", members=("fiona",), text=f"{c} betty-fiona")


@pytest.fixture
def scene(world: World) -> Scene:
    return Scene(world)


# --- EX1: who may export ----------------------------------------------------------------


@pytest.mark.parametrize("who", ["olivia", "priya"])
def test_ex1_owner_and_managers_with_export_permission_request_exports(who: str, world: World):
    made = request_export(world, who)
    assert made["export"]["status"] == "queued"
    assert made["export"]["requested_by"] == world.id(who)
    assert world.api(who).get("/api/v1/exports").json()["exports"][0]["id"] == made["export"]["id"]


@pytest.mark.parametrize("who", ["pete", "carl", "erin", "bill", "sally", "sam", "gus"])
def test_ex1_other_team_members_are_refused(who: str, world: World):
    made = request_export(world)
    api = world.api(who)
    for method, path in [
        ("POST", "/api/v1/exports"),
        ("GET", "/api/v1/exports"),
        ("GET", f"/api/v1/exports/{made['export']['id']}"),
        ("GET", f"/api/v1/exports/{made['export']['id']}/download"),
        ("DELETE", f"/api/v1/exports/{made['export']['id']}"),
    ]:
        r = api.request(method, path, json={"scope": "practice"} if method == "POST" else None)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "not_permitted"), path
        # Refused before any lookup: a missing id gets the very same answer.
        missing = api.request(method, path.replace(str(made["export"]["id"]), str(MISSING)))
        if method != "POST":
            assert missing.json() == r.json()


@pytest.mark.parametrize("who", ["alex", "pat", "owen", "zoe"])
def test_ex1_pm7_clients_and_other_practices_never_see_an_export(who: str, world: World):
    made = request_export(world)
    export_id = made["export"]["id"]
    for path in (f"/api/v1/exports/{export_id}", f"/api/v1/exports/{export_id}/download"):
        r = world.api(who).get(path)
        reference = world.api(who).get(path.replace(str(export_id), str(MISSING)))
        assert r.status_code == 404, r.text
        assert r.json() == reference.json()
    listed = world.api(who).get("/api/v1/exports")
    if who == "owen":  # his own practice's exports: none
        assert listed.json() == {"exports": []}
    else:
        assert listed.status_code == 404


def test_ex1_losing_the_export_permission_ends_access(world: World):
    made = request_export(world, "priya")
    r = world.api("olivia").patch(
        f"/api/v1/members/{world.id('priya')}", json={"export_client_data": False}
    )
    assert r.status_code == 200, r.text
    r = world.api("priya").get(f"/api/v1/exports/{made['export']['id']}")
    assert (r.status_code, r.json()["error"]["code"]) == (403, "not_permitted")


# --- EX3: the password, the archive's encryption ----------------------------------------


def test_ex3_password_is_shown_once_with_at_least_128_random_bits(world: World):
    made = request_export(world)
    password = made["password"]
    assert isinstance(password, str) and re.fullmatch(r"[A-Za-z0-9_-]{32}", password)  # 192 bits
    assert made["warning"] is None
    assert request_export(world)["password"] != password
    # Never again: not in the export's state, not in the list.
    assert password not in world.api("priya").get(f"/api/v1/exports/{made['export']['id']}").text
    assert password not in world.api("olivia").get("/api/v1/exports").text
    # At rest it is encrypted, and it is erased once the archive is written.
    with world.runtime.db.engine.connect() as conn:
        stored = conn.execute(
            select(DataExportRow.password).where(DataExportRow.id == made["export"]["id"])
        ).scalar_one()
    assert stored is not None and password.encode() not in stored
    assert run(world, made["export"]["id"]) == "ready"
    with world.runtime.db.engine.connect() as conn:
        stored = conn.execute(
            select(DataExportRow.password).where(DataExportRow.id == made["export"]["id"])
        ).scalar_one()
    assert stored is None


def test_ex3_t33_archive_is_aes256_opens_with_the_password_only(scene: Scene):
    world = scene.world
    made = request_export(world)
    export_id = made["export"]["id"]
    assert run(world, export_id) == "ready"
    data = download(world, export_id)
    # Every entry is WinZip AES (method 99, the encrypted flag set), never ZipCrypto.
    with zipfile.ZipFile(io.BytesIO(data)) as raw:
        infos = raw.infolist()
        assert infos and all(i.compress_type == 99 and i.flag_bits & 1 for i in infos)
        with pytest.raises(RuntimeError, match="password required"):
            raw.read(infos[0].filename)
    # AES-256: the extra field 0x9901 says strength 3.
    assert all(_aes_strength(i.extra) == 3 for i in infos)
    with pyzipper.AESZipFile(io.BytesIO(data)) as zf:
        zf.setpassword(b"not the password")
        with pytest.raises(RuntimeError):
            zf.read(infos[0].filename)
    # Without the password no name of a client or team member appears anywhere in the
    # file (entry names are opaque numbers, EX5), and no message text either.
    for needle in (*NAMES_A, scene.canary):
        for encoding in ("utf-8", "utf-16-le"):
            assert needle.encode(encoding) not in data, needle
    files = files_of(data, made["password"])
    assert "index.txt" in files
    assert all(re.fullmatch(r"Secure messages/\d{6}\.txt", n) for n in files if n != "index.txt"), (
        sorted(files)
    )


def _aes_strength(extra: bytes) -> int | None:
    i = 0
    while i + 4 <= len(extra):
        tag, size = (
            int.from_bytes(extra[i : i + 2], "little"),
            int.from_bytes(extra[i + 2 : i + 4], "little"),
        )
        if tag == 0x9901:
            return extra[i + 4 + 4]
        i += 4 + size
    return None


def test_ex3_unticking_the_password_is_warned_about_and_audited(scene: Scene):
    world = scene.world
    made = request_export(world, "olivia", scope="practice", password=False)
    assert made["password"] is None
    assert "not password-protected" in made["warning"]
    export_id = made["export"]["id"]
    assert made["export"]["password_protected"] is False
    assert audit_actions(world, export_id) == ["export.requested", "export.password_waived"]
    assert run(world, export_id) == "ready"
    data = download(world, export_id, "olivia")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # plain zip: any tool opens it
        names = set(zf.namelist())
    # EX5: without a password the files are named with the people's names.
    assert "Secure messages/Alex Client.txt" in names
    assert "Secure messages/Jordan Client.txt" in names
    assert "Secure messages/Team - Carl Test and Sam Test.txt" in names
    assert "Secure messages/Team - Betty Test and Fiona Test.txt" in names
    assert "index.txt" not in names


# --- EX5: what the archive holds ----------------------------------------------------------


def test_ex5_archive_holds_every_message_in_order_removed_ones_marked(scene: Scene):
    world, c = scene.world, scene.canary
    made = request_export(world)
    export_id = made["export"]["id"]
    assert run(world, export_id) == "ready"
    files = files_of(download(world, export_id), made["password"])
    index = files.pop("index.txt")
    by_title = {}
    for line in index.splitlines():
        if "\t" in line:
            name, what = line.split("\t", 1)
            by_title[what.split(":", 1)[0]] = files[f"Secure messages/{name}"]
    assert set(by_title) == {
        "Transcript of Alex Client",
        "Transcript of Jordan Client",
        "Team messages between Carl Test and Sam Test",
        "Team messages between Carl Test, Priya Test, Sam Test",
        "Team messages between Betty Test and Fiona Test",
    }, index
    # N messages in, N out (removed ones included).
    total = sum(len(LINE.findall(text)) for text in files.values())
    assert total == messages_in_store(world) == 11
    assert status(world, export_id)["messages"] == 11
    # Each file starts with the names of its people.
    alex = by_title["Transcript of Alex Client"]
    assert alex.splitlines()[0] == "People: Alex Client (Client), Carl Test (Clinician)"
    jordan = by_title["Transcript of Jordan Client"]
    assert jordan.startswith("People: Jordan Client (Client), Pat Parent (Contact (Parent)), ")
    pair = by_title["Team messages between Carl Test and Sam Test"]
    assert pair.startswith("People: Carl Test (Clinician), Sam Test (Clinician, Supervisor)")
    # In order, with multi-line text kept; the removed message keeps its text, marked.
    order = [
        f"{c} first to alex",
        f"{c} alex answers\n    over two lines",
        f"{c} said too much",
        f"{c} last to alex",
    ]
    positions = [alex.index(t) for t in order]
    assert positions == sorted(positions)
    removed_line = next(line for line in alex.splitlines() if "said too much" in line)
    assert re.search(
        r"Carl Test \(Clinician\) \[REMOVED by Carl Test at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\]",
        removed_line,
    )
    # Both carl-sam conversations are in the one file of that pair, in order.
    assert pair.index("carl-sam one") < pair.index("sam replies") < pair.index("carl-sam two")
    assert pair.count("=== Conversation") == 2


def test_ex6_one_clinicians_export_holds_their_clients_and_team_conversations(scene: Scene):
    world = scene.world
    made = request_export(world, scope="clinician", clinician_id=world.id("carl"))
    assert made["export"]["scope"] == "clinician"
    assert run(world, made["export"]["id"]) == "ready"
    files = files_of(download(world, made["export"]["id"]), made["password"])
    titles = {
        line.split("\t", 1)[1].split(":", 1)[0]
        for line in files["index.txt"].splitlines()
        if "\t" in line
    }
    assert titles == {
        "Transcript of Alex Client",
        "Team messages between Carl Test and Sam Test",
        "Team messages between Carl Test, Priya Test, Sam Test",
    }
    text = "".join(files.values())
    assert "to pat" not in text and "betty-fiona" not in text
    assert sum(len(LINE.findall(t)) for t in files.values()) == 4 + 3 + 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"scope": "clinician"}, "clinician_required"),
        ({"scope": "clinician", "clinician_id": "carl"}, "invalid_input"),
        ({"scope": "practice", "clinician_id": 5}, "clinician_not_expected"),
        ({"scope": "everything"}, "invalid_input"),
        ({"scope": "practice", "password": "yes"}, "invalid_input"),
        ({"scope": "practice", "extra": 1}, "invalid_input"),
    ],
)
def test_ex2_bad_requests_are_422_and_queue_nothing(body: dict[str, Any], code: str, world: World):
    r = world.api("priya").post("/api/v1/exports", json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (422, code), r.text
    assert world.api("priya").get("/api/v1/exports").json() == {"exports": []}


def test_ex2_the_chosen_clinician_must_be_a_clinician_of_the_practice(world: World):
    r = world.api("priya").post(
        "/api/v1/exports", json={"scope": "clinician", "clinician_id": world.id("bill")}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "not_a_clinician")
    for other in (world.id("bea"), MISSING):  # another practice's clinician, nobody
        r = world.api("priya").post(
            "/api/v1/exports", json={"scope": "clinician", "clinician_id": other}
        )
        assert r.status_code == 404, r.text
    assert world.api("priya").get("/api/v1/exports").json() == {"exports": []}


# --- EX4: background states, a crash mid-run -----------------------------------------------


def test_ex4_states_queued_generating_ready(scene: Scene, monkeypatch: pytest.MonkeyPatch):
    world = scene.world
    made = request_export(world)
    export_id = made["export"]["id"]
    assert (made["export"]["status"], made["export"]["progress"]) == ("queued", 0)
    assert made["export"]["download_url"] is None
    seen: list[tuple[str, int]] = []
    real = export_service._Writer._report

    def spy(self: Any) -> None:
        seen.append((status(world, export_id)["status"], 0))
        self._last_report = 0.0  # report at every page
        real(self)

    monkeypatch.setattr(export_service, "MESSAGE_PAGE", 1)
    monkeypatch.setattr(export_service._Writer, "_report", spy)
    assert run(world, export_id) == "ready"
    assert seen and {s for s, _ in seen} == {"generating"}
    done = status(world, export_id)
    assert done["status"] == "ready" and done["progress"] == 100
    assert done["download_url"] == f"/api/v1/exports/{export_id}/download"
    assert done["messages"] == 11 and done["file_size"] > 0
    assert run(world, export_id) is None  # a ready export is never claimed again


def test_ex4_a_failure_mid_run_leaves_a_retryable_job_and_no_archive(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
):
    world = scene.world
    export_dir = world.runtime.settings.resolved_export_dir
    made = request_export(world)
    export_id = made["export"]["id"]
    calls = {"n": 0}
    real_line = export_service._line

    def failing(*args: Any) -> str:
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError("disk full")
        return real_line(*args)

    monkeypatch.setattr(export_service, "_line", failing)
    assert run(world, export_id) == "retry"
    state = status(world, export_id)
    assert (state["status"], state["error"], state["download_url"]) == (
        "queued",
        "storage_error",
        None,
    )
    assert not list(export_dir.glob(f"*-{export_id}.zip*"))  # nothing partial left
    r = world.api("priya").get(f"/api/v1/exports/{export_id}/download")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "export_not_ready")
    monkeypatch.setattr(export_service, "_line", real_line)
    assert run(world, export_id) == "ready"
    assert (
        len(LINE.findall("".join(files_of(download(world, export_id), made["password"]).values())))
        == 11
    )
    assert audit_actions(world, export_id) == [
        "export.requested",
        "export.failed",
        "export.generated",
        "export.downloaded",
    ]


def test_ex4_a_run_that_dies_is_claimed_again_after_its_lease(scene: Scene):
    """A worker killed mid-run leaves the export `generating` with a `.part` file; once
    its lease runs out another run takes it over, removes the leftovers and finishes."""
    world = scene.world
    db, export_dir = world.runtime.db, world.runtime.settings.resolved_export_dir
    made = request_export(world)
    export_id = made["export"]["id"]
    assert export_jobs.claim_export(db, only=export_id) is not None  # ... and then it died
    export_dir.mkdir(parents=True, exist_ok=True)
    part = export_dir / f"{world.practice_a}-{export_id}.zip.part"
    part.write_bytes(b"half an archive")
    assert status(world, export_id)["status"] == "generating"
    assert run(world, export_id) is None  # its lease still runs: nobody else takes it
    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=2), tick=True):
        assert run(world, export_id) == "ready"
    assert not part.exists()
    assert status(world, export_id)["status"] == "ready"


def test_ex4_gives_up_after_the_last_attempt_with_the_reason(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
):
    world = scene.world
    made = request_export(world)
    export_id = made["export"]["id"]

    def broken(*_args: Any) -> str:
        raise ValueError("boom")

    monkeypatch.setattr(export_service, "_line", broken)
    assert [run(world, export_id) for _ in range(3)] == ["retry", "retry", "failed"]
    state = status(world, export_id)
    assert (state["status"], state["error"]) == ("failed", "internal_error")
    assert run(world, export_id) is None


# --- EX3: download window, deletion -------------------------------------------------------


def test_ex3_download_expires_after_72_hours_and_the_file_is_removed(scene: Scene):
    world = scene.world
    made = request_export(world)
    export_id = made["export"]["id"]
    assert run(world, export_id) == "ready"
    ready = status(world, export_id)
    expires = datetime.fromisoformat(ready["expires_at"])
    finished = datetime.fromisoformat(ready["finished_at"])
    assert expires - finished == timedelta(hours=72)
    path = export_service.archive_path(
        world.runtime.settings.resolved_export_dir, _export(world, export_id)
    )
    assert path.is_file()
    with time_machine.travel(expires - timedelta(minutes=1), tick=False):
        assert download(world, export_id)
    with time_machine.travel(expires + timedelta(seconds=1), tick=False):
        r = world.api("priya").get(f"/api/v1/exports/{export_id}/download")
        assert (r.status_code, r.json()["error"]["code"]) == (410, "export_expired")
        assert status(world, export_id)["download_url"] is None
        export_jobs.expire_exports(
            world.runtime.db, export_dir=world.runtime.settings.resolved_export_dir
        )
    assert not path.exists()
    assert status(world, export_id)["status"] == "expired"
    assert audit_actions(world, export_id)[-1] == "export.expired"


def test_ex3_one_sweep_expires_a_backlog_larger_than_its_batch(scene: Scene):
    """A server that was down comes back to more expired archives than one batch: the
    sweep goes on until none is left (here batches of 2 for 3 exports)."""
    world = scene.world
    ids = [request_export(world)["export"]["id"] for _ in range(3)]
    for export_id in ids:
        assert run(world, export_id) == "ready"
    latest = max(datetime.fromisoformat(status(world, i)["expires_at"]) for i in ids)
    with time_machine.travel(latest + timedelta(seconds=1), tick=False):
        swept = export_jobs.expire_exports(
            world.runtime.db, export_dir=world.runtime.settings.resolved_export_dir, batch=2
        )
    assert swept >= 3
    assert [status(world, i)["status"] for i in ids] == ["expired"] * 3


def _export(world: World, export_id: int) -> Any:
    with world.runtime.read() as uow:
        return uow.exports.get_export(world.practice_a, export_id)


def test_ex3_deleting_an_export_removes_its_file_and_keeps_the_record(scene: Scene):
    world = scene.world
    made = request_export(world)
    export_id = made["export"]["id"]
    assert run(world, export_id) == "ready"
    path = export_service.archive_path(
        world.runtime.settings.resolved_export_dir, _export(world, export_id)
    )
    assert path.is_file()
    r = world.api("olivia").delete(f"/api/v1/exports/{export_id}")
    assert r.status_code == 200 and r.json()["status"] == "deleted", r.text
    assert not path.exists()
    r = world.api("priya").get(f"/api/v1/exports/{export_id}/download")
    assert (r.status_code, r.json()["error"]["code"]) == (410, "export_expired")
    assert status(world, export_id)["status"] == "deleted"


def test_ex4_deleting_a_queued_export_cancels_it(world: World):
    made = request_export(world)
    export_id = made["export"]["id"]
    assert world.api("priya").delete(f"/api/v1/exports/{export_id}").status_code == 200
    assert run(world, export_id) is None
    assert status(world, export_id)["status"] == "deleted"


# --- RC1: audited ----------------------------------------------------------------------------


def test_rc1_every_export_and_download_is_audited_without_phi(scene: Scene):
    world = scene.world
    made = request_export(world)
    export_id = made["export"]["id"]
    assert run(world, export_id) == "ready"
    download(world, export_id)
    download(world, export_id, "olivia")
    assert audit_actions(world, export_id) == [
        "export.requested",
        "export.generated",
        "export.downloaded",
        "export.downloaded",
    ]
    with world.runtime.db.engine.connect() as conn:
        rows = conn.execute(
            select(AuditRow.actor_kind, AuditRow.actor_id, AuditRow.meta)
            .where(AuditRow.chain_id == world.practice_a, AuditRow.target_id == export_id)
            .where(AuditRow.target_kind == "export")
            .order_by(AuditRow.seq)
        ).all()
    assert [(k, i) for k, i, _ in rows] == [
        ("member", world.id("priya")),
        ("system", 0),
        ("member", world.id("priya")),
        ("member", world.id("olivia")),
    ]
    text = " ".join(m for _, _, m in rows)
    assert made["password"] not in text and scene.canary not in text
    assert '"messages":11' in text
    assert not any(name in text for name in NAMES_A)


def test_ex4_the_export_runner_in_serve_picks_up_requests(scene: Scene):
    """The claimer runs in the app's lifespan (like the outbox relay) and is woken by a
    request: the export becomes ready without anyone running the job by hand."""
    world = scene.world
    headers = dict(world.api("priya").headers)
    with TestClient(create_app(world.runtime), base_url="https://testserver") as http:
        r = http.post("/api/v1/exports", json={"scope": "practice"}, headers=headers)
        assert r.status_code == 201, r.text
        export_id = r.json()["export"]["id"]
        deadline = datetime.now(UTC) + timedelta(seconds=20)
        while datetime.now(UTC) < deadline:
            state = http.get(f"/api/v1/exports/{export_id}", headers=headers).json()
            if state["status"] == "ready":
                break
            time.sleep(0.1)
        assert state["status"] == "ready", state


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z (Debian p7zip-full) not installed")
def test_ex3_7zip_opens_the_archive_with_the_password_and_reports_aes256(
    scene: Scene, tmp_path: Path
):
    world = scene.world
    made = request_export(world)
    assert run(world, made["export"]["id"]) == "ready"
    archive = tmp_path / "export.zip"
    archive.write_bytes(download(world, made["export"]["id"]))
    listing = subprocess.run(
        ["7z", "l", "-slt", f"-p{made['password']}", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    methods = re.findall(r"^Method = (.+)$", listing, re.M)
    assert methods and set(methods) == {"AES-256 Deflate"}, listing
    tested = subprocess.run(
        ["7z", "t", f"-p{made['password']}", str(archive)],
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0 and "Everything is Ok" in tested.stdout, tested.stdout
    wrong = subprocess.run(
        ["7z", "t", "-pwrong-password", str(archive)],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode != 0
    out = tmp_path / "out"
    subprocess.run(
        ["7z", "x", f"-p{made['password']}", f"-o{out}", str(archive)],
        capture_output=True,
        check=True,
    )
    texts = "".join(p.read_text() for p in (out / "Secure messages").iterdir())
    assert len(LINE.findall(texts)) == 11
    assert f"{scene.canary} last to alex" in texts


def test_ex4_the_migration_matches_the_tables_and_reverses(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'exports.db'}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == [], diffs
    migrate.downgrade(engine, "0003")
    tables = set(inspect(engine).get_table_names())
    assert not tables & {"data_exports", "announcements", "announcement_recipients"}
    assert not {i["name"] for i in inspect(engine).get_indexes("audit_log")} & {
        "ix_audit_log_actor",
        "ix_audit_log_action",
    }
    migrate.upgrade(engine)
    assert "data_exports" in inspect(engine).get_table_names()
    engine.dispose()


# --- Chart notes: part of a complete export (EX2 "complete", TR2) --------------------------


def copy_to_chart_note(world: World, who: str, client: str, message_ids: list[int]) -> int:
    r = world.api(who).post(
        f"/api/v1/clients/{world.id(client)}/chart-notes", json={"message_ids": message_ids}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def alex_messages(world: World) -> list[dict[str, Any]]:
    r = world.api("carl").get(f"/api/v1/clients/{world.id('alex')}/transcript")
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


def test_ex2_tr2_chart_notes_are_in_the_export_under_opaque_names(scene: Scene):
    world, c = scene.world, scene.canary
    msgs = alex_messages(world)
    first = copy_to_chart_note(world, "carl", "alex", [msgs[0]["id"], scene.removed["id"]])
    second = copy_to_chart_note(world, "olivia", "alex", [msgs[-1]["id"]])
    made = request_export(world)
    assert run(world, made["export"]["id"]) == "ready"
    data = download(world, made["export"]["id"])
    for needle in (*NAMES_A, c):  # nothing readable without the password (EX5)
        assert needle.encode() not in data, needle
    files = files_of(data, made["password"])
    notes = [n for n in files if n.startswith("Chart notes/")]
    assert len(notes) == 1 and re.fullmatch(r"Chart notes/\d{6}\.txt", notes[0]), sorted(files)
    index = files["index.txt"]
    assert f"{notes[0]}\tChart notes of Alex Client: Alex Client (Client)" in index
    text = files[notes[0]]
    assert text.startswith("People: Alex Client (Client)\nChart notes of Alex Client\n")
    # Oldest note first, each with who copied it; entries as copied, the removed one
    # with its text, marked removed by whom and when.
    assert text.index(f"=== Chart note {first}, copied by Carl Test") < text.index(
        f"=== Chart note {second}, copied by Olivia Owens"
    )
    assert f"Carl Test (Clinician): {c} first to alex" in text
    assert re.search(
        rf"Carl Test \(Clinician\) \[REMOVED by Carl Test at [^\]]+ UTC\]: {c} said too much",
        text,
    ), text
    assert f"{c} last to alex" in text
    # The messages folder is unchanged by it: N messages in, N out.
    messages = "".join(t for n, t in files.items() if n.startswith("Secure messages/"))
    assert len(LINE.findall(messages)) == 11


def test_ex6_a_clinicians_export_holds_only_their_clients_chart_notes(scene: Scene):
    world = scene.world
    copy_to_chart_note(world, "carl", "alex", [alex_messages(world)[0]["id"]])
    jordan = world.api("betty").get(f"/api/v1/clients/{world.id('jordan')}/transcript")
    copy_to_chart_note(world, "betty", "jordan", [jordan.json()["messages"][0]["id"]])
    made = request_export(world, scope="clinician", clinician_id=world.id("carl"))
    assert run(world, made["export"]["id"]) == "ready"
    files = files_of(download(world, made["export"]["id"]), made["password"])
    titles = [
        line.split("\t", 1)[1].split(":", 1)[0]
        for line in files["index.txt"].splitlines()
        if line.startswith("Chart notes/")
    ]
    assert titles == ["Chart notes of Alex Client"]
    assert "Jordan" not in "".join(files.values())


def test_ex5_without_a_password_chart_notes_are_named_after_the_client(scene: Scene):
    world = scene.world
    copy_to_chart_note(world, "carl", "alex", [alex_messages(world)[0]["id"]])
    made = request_export(world, password=False)
    assert made["password"] is None
    assert run(world, made["export"]["id"]) == "ready"
    files = files_of(download(world, made["export"]["id"]), None)
    assert "Chart notes/Alex Client.txt" in files
    assert "index.txt" not in files


@pytest.mark.skipif(shutil.which("7z") is None, reason="7z (Debian p7zip-full) not installed")
def test_ex3_7zip_opens_the_chart_notes_with_the_password(scene: Scene, tmp_path: Path):
    world = scene.world
    copy_to_chart_note(world, "carl", "alex", [scene.removed["id"]])
    made = request_export(world)
    assert run(world, made["export"]["id"]) == "ready"
    archive = tmp_path / "export.zip"
    archive.write_bytes(download(world, made["export"]["id"]))
    listing = subprocess.run(
        ["7z", "l", "-slt", f"-p{made['password']}", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"^Path = Chart notes/\d{6}\.txt$", listing, re.M), listing
    assert set(re.findall(r"^Method = (.+)$", listing, re.M)) == {"AES-256 Deflate"}
    out = tmp_path / "out"
    subprocess.run(
        ["7z", "x", f"-p{made['password']}", f"-o{out}", str(archive)],
        capture_output=True,
        check=True,
    )
    (note,) = (out / "Chart notes").iterdir()
    text = note.read_text()
    assert text.startswith("People: Alex Client (Client)")
    assert f"{scene.canary} said too much" in text and "[REMOVED by Carl Test" in text
