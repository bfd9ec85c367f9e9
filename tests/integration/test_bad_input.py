"""Bad input of every kind gets a clear 4xx and changes nothing; never a 500.

Too long, blank, wrong types, unknown ids, the other practice's ids, malformed JSON,
huge bodies, wrong content types: for every main write route the answer is a 4xx with
`{"error": {"code", "message"}}` and a specific code, and a snapshot of every table
(row counts and contents) is the same before and after (SPEC MS1, PM7; RC1 for the one
refusal that is audited on purpose: a failed sign-in).
"""

import functools
import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Dialect, Engine, func, select
from starlette.testclient import TestClient

from confide.services import clients as client_service
from confide.store.tables import AuditRow, Base, MessageRow
from confide.store.uow import unit_of_work
from tests.personas import PASSWORD, World, anonymous, start

ON_POSTGRES = os.environ.get("CONFIDE_TEST_DATABASE") == "postgres"
LIMIT = 64 * 1024
_keys = itertools.count(1)

# Columns that move on every authenticated request (idle timers), not on input, and
# the outbox relay's bookkeeping (it works in the background on earlier requests' rows).
VOLATILE = {
    ("sessions", "last_seen_at"),
    ("api_tokens", "last_used_at"),
    ("outbox", "attempts"),
    ("outbox", "claimed_until"),
    ("outbox", "done_at"),
    ("outbox", "last_error"),
}
DERIVED = {"events"}  # written by the outbox relay from committed outbox rows


def key() -> str:
    return f"bad-input-{uuid.uuid4().hex[:12]}-{next(_keys)}"


# --- the "nothing changed" snapshot ----------------------------------------------------


@functools.cache
def _snapshot_queries(dialect: Dialect) -> list[tuple[str, str]]:
    """SELECT every column but the volatile ones, in primary-key order, compiled once."""
    queries = []
    for table in Base.metadata.sorted_tables:
        if table.name in DERIVED:
            continue
        cols = [c for c in table.columns if (table.name, c.name) not in VOLATILE]
        order = list(table.primary_key.columns) or cols
        queries.append((table.name, str(select(*cols).order_by(*order).compile(dialect=dialect))))
    return queries


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (minus idle-timer columns), in primary-key order.

    Plain DB-API cursor, read only: this runs twice per case, so it must be quick."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, sql in _snapshot_queries(engine.dialect):
            cur.execute(sql)
            out[name] = [tuple(r) for r in cur.fetchall()]
        cur.close()
        raw.rollback()
    finally:
        raw.close()
    return out


def assert_unchanged(
    before: dict[str, list[tuple[Any, ...]]],
    after: dict[str, list[tuple[Any, ...]]],
    *,
    sign_in_audit: bool = False,
) -> None:
    """Nothing changed; with `sign_in_audit`, except one `signin.failed` audit row (RC1:
    a failed sign-in for a known email is audited on purpose) and the failed-attempt
    counters of the lockout (issue 5)."""
    changed = {
        name: (len(before[name]), len(after[name]))
        for name in before
        if before[name] != after[name]
    }
    if sign_in_audit and changed:
        assert set(changed) <= {"audit_log", "audit_heads", "signin_failures"}, changed
        new = [row for row in after["audit_log"] if row not in before["audit_log"]]
        assert len(new) == 1 and "signin.failed" in new[0], new
        return
    assert not changed, f"tables changed by a refused request (rows before, after): {changed}"


def assert_error_shape(r: Any) -> dict[str, str]:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    code, message = body["error"]["code"], body["error"]["message"]
    assert isinstance(code, str) and code and code != "error", body
    assert isinstance(message, str) and message.strip(), body
    return body["error"]


# --- the world of this module -----------------------------------------------------------


@dataclass
class Ctx:
    world: World
    conv_a: int  # carl <-> alex, practice A
    conv_b: int  # bea <-> zoe, practice B
    contact_b: int  # a contact of zoe, practice B
    unknown: int  # an id that fits every schema and exists nowhere
    nobody: TestClient  # not signed in

    def id(self, name: str) -> int:
        return self.world.id(name)

    def client(self, who: str | None) -> TestClient:
        if who is None:
            self.nobody.cookies.clear()  # a sign-in must not stick to "nobody"
            return self.nobody
        return self.world.api(who)


@pytest.fixture(scope="module")
def ctx(shared_world: World) -> Ctx:
    w = shared_world
    conv_a = start(w, "carl", client="alex", text="Hi Alex").conversation.id
    conv_b = start(w, "bea", client="zoe", text="Hi Zoe").conversation.id
    with unit_of_work(w.runtime.db) as uow:
        contact = client_service.add_contact(
            uow,
            w.actor("owen"),
            w.id("zoe"),
            name="Zack Zoe",
            email=None,
            relationship="Partner",
            portal_access=True,
            messaging_enabled=True,
        )
    for name in ("carl", "olivia", "alex", "bea", "owen", "erin"):
        w.api(name)  # sign in now: signing in writes rows, the refused requests must not
    return Ctx(w, conv_a, conv_b, contact.id, 2**62, anonymous(w.runtime))


def refused(
    ctx: Ctx,
    who: str | None,
    method: str,
    url: str,
    *,
    status: int | tuple[int, ...] | None = None,
    code: str | tuple[str, ...] | None = None,
    **kwargs: Any,
) -> dict[str, str]:
    client = ctx.client(who)
    engine = ctx.world.runtime.db.engine
    before = snapshot(engine)
    r = client.request(method, url, **kwargs)
    error = assert_error_shape(r)
    if status is not None:
        wanted = status if isinstance(status, tuple) else (status,)
        assert r.status_code in wanted, (r.status_code, r.text[:500])
    if code is not None:
        wanted_codes = code if isinstance(code, tuple) else (code,)
        assert error["code"] in wanted_codes, (r.status_code, error)
    assert_unchanged(
        before,
        snapshot(engine),
        sign_in_audit=url.endswith("/auth/login") and error["code"] == "sign_in_failed",
    )
    return error


# --- the routes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    who: str | None
    method: str
    path: Callable[[Ctx], str]
    valid: Callable[[Ctx], dict[str, Any]]
    required: tuple[str, ...]  # fields whose absence is refused


ROUTES: dict[str, Route] = {
    "start_conversation": Route(
        "carl",
        "POST",
        lambda c: "/api/v1/conversations",
        lambda c: {"member_ids": [c.id("erin")], "text": "Hello", "idempotency_key": key()},
        ("text", "idempotency_key"),
    ),
    "send_message": Route(
        "carl",
        "POST",
        lambda c: f"/api/v1/conversations/{c.conv_a}/messages",
        lambda c: {"text": "Hello", "idempotency_key": key()},
        ("text", "idempotency_key"),
    ),
    "practice_messaging": Route(
        "olivia",
        "PATCH",
        lambda c: "/api/v1/practice/messaging",
        lambda c: {"team_messaging": True, "client_messaging": True},
        (),
    ),
    "add_member": Route(
        "olivia",
        "POST",
        lambda c: "/api/v1/members",
        lambda c: {
            "name": "Nia New",
            "email": f"nia.{uuid.uuid4().hex[:10]}@maple.test",
            "roles": ["biller"],
        },
        ("name", "email", "roles"),
    ),
    "create_client": Route(
        "olivia",
        "POST",
        lambda c: "/api/v1/clients",
        lambda c: {"name": "Cleo Client", "primary_clinician_id": c.id("carl")},
        ("name",),
    ),
    "set_away": Route(
        "carl",
        "PUT",
        lambda c: "/api/v1/me/away",
        lambda c: {"on": False},
        (),
    ),
    "mark_read": Route(
        "carl",
        "POST",
        lambda c: f"/api/v1/conversations/{c.conv_a}/read",
        lambda c: {"seq": 0},
        ("seq",),
    ),
    "login": Route(
        None,
        "POST",
        lambda c: "/api/v1/auth/login",
        lambda c: {"email": c.world.emails["carl"], "password": PASSWORD},
        ("email", "password"),
    ),
    "add_contact": Route(
        "olivia",
        "POST",
        lambda c: f"/api/v1/clients/{c.id('alex')}/contacts",
        lambda c: {"name": "Pia Partner", "relationship": "Partner"},
        ("name",),
    ),
}
AUTHENTICATED = [name for name, r in ROUTES.items() if r.who is not None]


def _json(body: Any) -> dict[str, Any]:
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


@pytest.mark.parametrize("route", list(ROUTES))
def test_input_valid_bodies_are_accepted(ctx: Ctx, route: str):
    """The control: each route's valid body passes, so the refusals below are about
    the badness of the input, not about the route refusing everything."""
    r_ = ROUTES[route]
    r = ctx.client(r_.who).request(r_.method, r_.path(ctx), **_json(r_.valid(ctx)))
    assert r.status_code in (200, 201, 204), (r.status_code, r.text)


# --- malformed JSON and wrong shapes, on every route --------------------------------------

MALFORMED = {
    "truncated": b'{"text": "Hello", ',
    "trailing_comma": b'{"text": "Hello",}',
    "single_quotes": b"{'text': 'Hello'}",
    "two_documents": b'{"a": 1}{"b": 2}',
    "bare_word": b"hello",
    "unclosed_string": b'{"text": "Hello}',
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("doc", list(MALFORMED))
def test_input_malformed_json_is_400_malformed_json(ctx: Ctx, route: str, doc: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=400,
        code="malformed_json",
        content=MALFORMED[doc],
        headers={"content-type": "application/json"},
    )


NOT_JSON_BYTES = {
    "invalid_utf8": b'{"text": "\xff\xfe", "idempotency_key": "k"}',
    "latin1": '{"text": "caf\xe9"}'.encode("latin-1"),
    "deep_nesting": b"[" * 50_000,
    "huge_integer_literal": b'{"seq": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("route", ["send_message", "login", "mark_read"])
@pytest.mark.parametrize("doc", list(NOT_JSON_BYTES))
def test_input_undecodable_json_is_400_malformed_json(ctx: Ctx, route: str, doc: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=400,
        code="malformed_json",
        content=NOT_JSON_BYTES[doc],
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize("route", ["send_message", "login", "mark_read"])
@pytest.mark.parametrize("doc", list(NOT_JSON_BYTES))
def test_input_undecodable_json_is_a_clear_400(ctx: Ctx, route: str, doc: str):
    """Whatever its code, an undecodable body is a 400 that changes nothing."""
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=400,
        content=NOT_JSON_BYTES[doc],
        headers={"content-type": "application/json"},
    )


WRONG_TOP_LEVEL = {"list": [], "list_of_object": [{}], "string": "x", "number": 1, "null": None}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("shape", list(WRONG_TOP_LEVEL))
def test_input_body_of_the_wrong_json_type_is_422(ctx: Ctx, route: str, shape: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=422,
        code="invalid_input",
        **_json(WRONG_TOP_LEVEL[shape]),
    )


@pytest.mark.parametrize("route", list(ROUTES))
def test_input_empty_body_is_422(ctx: Ctx, route: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=422,
        code="invalid_input",
        content=b"",
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("extra", ["zzz", "practice_id", "plan"])
def test_input_unknown_fields_are_refused(ctx: Ctx, route: str, extra: str):
    """`practice_id`, `plan`, `sender_id` … are not settable by smuggling them in."""
    r_ = ROUTES[route]
    body = {**r_.valid(ctx), extra: 1}
    error = refused(
        ctx, r_.who, r_.method, r_.path(ctx), status=422, code="invalid_input", **_json(body)
    )
    assert extra in error["message"], error


@pytest.mark.parametrize(
    ("route", "field"), [(n, f) for n, r in ROUTES.items() for f in r.required]
)
def test_input_missing_required_field_is_422_naming_it(ctx: Ctx, route: str, field: str):
    r_ = ROUTES[route]
    body = r_.valid(ctx)
    del body[field]
    error = refused(
        ctx, r_.who, r_.method, r_.path(ctx), status=422, code="invalid_input", **_json(body)
    )
    assert field in error["message"], error


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded"],
)
def test_input_wrong_content_type_is_refused(ctx: Ctx, route: str, ctype: str):
    """A JSON document sent as text/plain or a form is not accepted (a cross-site form
    can send those without a preflight)."""
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=(400, 415, 422),
        code=("invalid_input", "unsupported_media_type", "bad_request"),
        content=json.dumps(r_.valid(ctx)).encode(),
        headers={"content-type": ctype},
    )


def test_input_form_post_with_a_portal_session_is_refused(ctx: Ctx):
    """The client portal signs in with a cookie: a cross-site form post is refused."""
    refused(
        ctx,
        "alex",
        "POST",
        f"/api/v1/conversations/{ctx.conv_a}/messages",
        status=(403, 415, 422),
        data={"text": "hi", "idempotency_key": key()},
        headers={"origin": "https://evil.example"},
    )


@pytest.mark.parametrize("route", AUTHENTICATED)
def test_input_no_credentials_is_401(ctx: Ctx, route: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        None,
        r_.method,
        r_.path(ctx),
        status=401,
        code="not_authenticated",
        **_json(r_.valid(ctx)),
    )


@pytest.mark.parametrize("route", AUTHENTICATED)
def test_input_garbage_bearer_token_is_401(ctx: Ctx, route: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        None,
        r_.method,
        r_.path(ctx),
        status=401,
        code="not_authenticated",
        content=json.dumps(r_.valid(ctx)).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer cfd_" + "A" * 400},
    )


# --- huge bodies --------------------------------------------------------------------------


def _big(route: Route, ctx: Ctx) -> bytes:
    body = route.valid(ctx)
    body["padding"] = "a" * (LIMIT + 10)
    return json.dumps(body).encode()


@pytest.mark.parametrize("route", list(ROUTES))
def test_input_body_over_64k_by_content_length_is_413(ctx: Ctx, route: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=413,
        code="body_too_large",
        content=_big(r_, ctx),
        headers={"content-type": "application/json"},
    )


def test_input_absurd_content_length_headers_are_413(ctx: Ctx):
    for value in ("99999999999999999999999", "-1x", "abc"):
        refused(
            ctx,
            "carl",
            "POST",
            f"/api/v1/conversations/{ctx.conv_a}/messages",
            status=413,
            code="body_too_large",
            content=b"{}",
            headers={"content-type": "application/json", "content-length": value},
        )


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("route", list(ROUTES))
def test_input_body_over_64k_streamed_chunked_is_refused(ctx: Ctx, route: str):
    """Without Content-Length the limit holds while streaming: a 4xx, nothing stored."""
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=(400, 413),
        content=_chunks(_big(r_, ctx)),
        headers={"content-type": "application/json"},
    )


@pytest.mark.parametrize("route", ["send_message", "login"])
def test_input_body_over_64k_streamed_chunked_is_413(ctx: Ctx, route: str):
    r_ = ROUTES[route]
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=413,
        code="body_too_large",
        content=_chunks(_big(r_, ctx)),
        headers={"content-type": "application/json"},
    )


def test_input_streamed_body_under_the_limit_is_accepted(ctx: Ctx):
    """The control for the streaming limit: a chunked body under 64 KiB goes through."""
    body = json.dumps({"text": "x" * 4000, "idempotency_key": key()}).encode()
    r = ctx.world.api("carl").post(
        f"/api/v1/conversations/{ctx.conv_a}/messages",
        content=_chunks(body, 1000),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 201, r.text


# --- field by field -----------------------------------------------------------------------

WRONG_TYPES_FOR_INT = ["1", 1.5, True, None, [1], {"id": 1}]
WRONG_TYPES_FOR_STR = [1, True, None, ["Hello"], {"text": "Hello"}]
WRONG_TYPES_FOR_BOOL = ["true", 1, 0, [True], {"on": True}]
BAD_IDS = [0, -1, 2**62 + 1, 2**63, 10**30, -(2**63)]


def _field_cases() -> Iterator[Any]:
    def case(route: str, field: str, value: Any, status: int, code: Any, label: str) -> Any:
        return pytest.param(route, field, value, status, code, id=f"{route}-{field}-{label}")

    for route, field in [
        ("start_conversation", "text"),
        ("start_conversation", "idempotency_key"),
        ("send_message", "text"),
        ("send_message", "idempotency_key"),
        ("add_member", "name"),
        ("add_member", "email"),
        ("add_member", "password"),
        ("create_client", "name"),
        ("create_client", "email"),
        ("set_away", "text"),
        ("login", "email"),
        ("login", "password"),
        ("add_contact", "name"),
        ("add_contact", "email"),
        ("add_contact", "relationship"),
    ]:
        for i, v in enumerate(WRONG_TYPES_FOR_STR):
            if (
                v is None
                and field in ("email", "password", "text")
                and route
                in (
                    "add_member",
                    "create_client",
                    "set_away",
                    "add_contact",
                )
            ):
                continue  # optional: null means "none"
            case_ = case(route, field, v, 422, "invalid_input", f"str{i}")
            yield case_
    for route, field in [
        ("start_conversation", "client_id"),
        ("start_conversation", "contact_id"),
        ("create_client", "primary_clinician_id"),
        ("mark_read", "seq"),
    ]:
        for i, v in enumerate(WRONG_TYPES_FOR_INT):
            if v is None and route != "mark_read":
                continue  # optional ids: null means "none"
            yield case(route, field, v, 422, "invalid_input", f"int{i}")
        for i, v in enumerate(BAD_IDS):
            if route == "mark_read" and v in (0, 2**62 + 1):
                continue  # seq 0 is valid; seq's upper bound is 2**31
            yield case(route, field, v, 422, "invalid_input", f"id{i}")
    bad_lists = [
        *(v for v in WRONG_TYPES_FOR_INT if not isinstance(v, list)),
        *([v] for v in WRONG_TYPES_FOR_INT),
        *([v] for v in BAD_IDS),
        1,
    ]
    for i, v in enumerate(bad_lists):
        if v == [1]:
            continue  # a well-formed list
        yield case("start_conversation", "member_ids", v, 422, "invalid_input", f"ids{i}")
    for field in ("team_messaging", "client_messaging", "auto_allow_new_clients"):
        for i, v in enumerate(WRONG_TYPES_FOR_BOOL):
            yield case("practice_messaging", field, v, 422, "invalid_input", f"bool{i}")
    for field in ("portal_access", "messaging_enabled"):
        for i, v in enumerate([*WRONG_TYPES_FOR_BOOL, None]):
            yield case("add_contact", field, v, 422, "invalid_input", f"bool{i}")
    for i, v in enumerate(WRONG_TYPES_FOR_BOOL):
        yield case("set_away", "on", v, 422, "invalid_input", f"bool{i}")
    for i, v in enumerate([*WRONG_TYPES_FOR_BOOL, None]):
        yield case("add_member", "export_client_data", v, 422, "invalid_input", f"bool{i}")
    for i, v in enumerate(["biller", [], [1], ["wizard"], [None], ["biller"] * 7, {"biller": 1}]):
        yield case("add_member", "roles", v, 422, "invalid_input", f"roles{i}")
    for i, v in enumerate(["wizard", 1, ["basic"], "BASIC"]):
        yield case("add_member", "access_level", v, 422, "invalid_input", f"level{i}")
    # ids that fit the schema but exist nowhere
    yield case("start_conversation", "client_id", 2**62, 404, "not_found", "unknown")
    yield case("start_conversation", "contact_id", 2**62, 404, "not_found", "unknown")
    yield case("start_conversation", "member_ids", [2**62], 404, "not_found", "unknown")
    yield case("create_client", "primary_clinician_id", 2**62, 404, "not_found", "unknown")
    # wire limits
    yield case("send_message", "text", "a" * 20_001, 422, "invalid_input", "over_wire_limit")
    yield case("send_message", "idempotency_key", "k" * 101, 422, "invalid_input", "key101")
    yield case("start_conversation", "member_ids", list(range(1, 52)), 422, "invalid_input", "51")
    yield case("login", "email", "a" * 1001, 422, "invalid_input", "1001")
    yield case("login", "password", "a" * 1001, 422, "invalid_input", "1001")
    yield case("set_away", "text", "a" * 5001, 422, "invalid_input", "5001")
    yield case("mark_read", "seq", 2**31 + 1, 422, "invalid_input", "over_int4")


@pytest.mark.parametrize(("route", "field", "value", "status", "code"), list(_field_cases()))
def test_input_wrong_field_values_are_refused(
    ctx: Ctx, route: str, field: str, value: Any, status: int, code: str
):
    r_ = ROUTES[route]
    body = {**r_.valid(ctx), field: value}
    if route == "start_conversation" and field in ("client_id", "contact_id"):
        body["member_ids"] = []
    error = refused(ctx, r_.who, r_.method, r_.path(ctx), status=status, code=code, **_json(body))
    if code == "invalid_input":
        assert field in error["message"], error


# --- MS1: text rules ----------------------------------------------------------------------

BLANKS = {
    "empty": "",
    "space": " ",
    "spaces": "     ",
    "newlines": "\n\n\r\n",
    "tabs": "\t \t",
    "nbsp": "\u00a0\u00a0",
    "zero_width": "\u200b\u200c\u200d",
    "bom": "\ufeff",
    "ideographic_space": "\u3000",
    "mixed": " \u2028\u2029\u200b\t\n",
}


@pytest.mark.parametrize("blank", list(BLANKS))
def test_ms1_blank_messages_are_refused(ctx: Ctx, blank: str):
    r_ = ROUTES["send_message" if len(blank) % 2 else "start_conversation"]
    body = {**r_.valid(ctx), "text": BLANKS[blank]}
    refused(ctx, r_.who, r_.method, r_.path(ctx), status=422, code="message_blank", **_json(body))


TOO_LONG = {
    "ascii": "a" * 5001,
    "astral_emoji": "😀" * 5001,  # 10,002 UTF-16 units: code points count, not units
    "combining": "e\u0301" * 2500 + "e",  # 5,001 code points, 2,501 graphemes
    "emoji_codes": ":grin:" * 3334,  # 20,004 typed characters: over the wire limit first
    "codes_after_emoji": "a" * 4999 + ":grin::grin:",  # 5,001 after emoji
    "cjk": "字" * 5001,
}


@pytest.mark.parametrize("route", ["send_message", "start_conversation"])
@pytest.mark.parametrize("text", list(TOO_LONG))
def test_ms1_text_over_5000_code_points_is_message_too_long(ctx: Ctx, route: str, text: str):
    r_ = ROUTES[route]
    body = {**r_.valid(ctx), "text": TOO_LONG[text]}
    code = "invalid_input" if text == "emoji_codes" else "message_too_long"
    refused(ctx, r_.who, r_.method, r_.path(ctx), status=422, code=code, **_json(body))


@pytest.mark.parametrize(
    "text",
    [
        "a" * 5000,
        "😀" * 5000,
        "字" * 5000,
        "a" * 4999 + ":grin:",
        ":grin:" * 3333,  # 19,998 typed, 3,333 after emoji
        "e\u0301" * 2500,
    ],
    ids=["ascii", "astral", "cjk", "code_counts_one", "many_codes", "combining"],
)
def test_ms1_text_of_5000_code_points_is_accepted(ctx: Ctx, text: str):
    """The boundary's other side (the control for the refusals above)."""
    r = ctx.world.api("carl").post(
        f"/api/v1/conversations/{ctx.conv_a}/messages",
        json={"text": text, "idempotency_key": key()},
    )
    assert r.status_code == 201, r.text
    assert len(r.json()["message"]["text"]) <= 5000


INVALID_CHARS = {
    "nul": "Hello\x00there",
    "bell": "Hello\x07",
    "escape": "\x1b[31mred\x1b[0m",
    "del": "Hello\x7f",
    "c1_control": "Hello\x85\x9b",
    "backspace": "abc\x08\x08\x08xyz",
    "lone_high_surrogate": "\ud800",
    "lone_low_surrogate": "\udfff",
    "surrogate_inside": "ab\ud83dcd",
    "reversed_pair": "\ude00\ud83d",
}


@pytest.mark.parametrize("chars", list(INVALID_CHARS))
def test_ms1_control_characters_and_lone_surrogates_are_refused(ctx: Ctx, chars: str):
    """Sent as JSON escapes (`"\\u0000"`, `"\\ud800"`): never stored, never a 500."""
    r_ = ROUTES["send_message" if len(chars) % 2 else "start_conversation"]
    body = {**r_.valid(ctx), "text": INVALID_CHARS[chars]}
    refused(
        ctx,
        r_.who,
        r_.method,
        r_.path(ctx),
        status=422,
        code=("invalid_text", "invalid_input"),
        **_json(body),
    )


SURROGATE_FIELDS = [
    ("send_message", "idempotency_key"),
    ("start_conversation", "idempotency_key"),
    ("add_member", "name"),
    ("add_member", "email"),
    ("add_member", "password"),
    ("create_client", "name"),
    ("create_client", "email"),
    ("set_away", "text"),
    ("login", "email"),
    ("login", "password"),
    ("add_contact", "name"),
    ("add_contact", "email"),
    ("add_contact", "relationship"),
]


@pytest.mark.parametrize(("route", "field"), SURROGATE_FIELDS)
@pytest.mark.parametrize("chars", ["nul", "lone_high_surrogate"])
def test_input_control_characters_and_surrogates_in_any_text_field(
    ctx: Ctx, route: str, field: str, chars: str
):
    """Every text field, not only messages: NUL (which PostgreSQL cannot store) and lone
    surrogates (which UTF-8 cannot encode) are refused before they reach the database
    or the password hasher."""
    r_ = ROUTES[route]
    value = INVALID_CHARS[chars]
    if field == "password":
        if route == "add_member" and chars == "nul":
            pytest.skip("a new password may hold any character (argon2 hashes bytes)")
        value = value * 12  # long enough to pass the length rule
    if field == "email":
        value = f"a{value}b@maple.test"
    body = {**r_.valid(ctx), field: value}
    refused(ctx, r_.who, r_.method, r_.path(ctx), **_json(body))


@pytest.mark.parametrize(
    ("route", "field", "value", "code"),
    [
        ("create_client", "name", "", "name_blank"),
        ("create_client", "name", " \t\n ", "name_blank"),
        ("create_client", "name", "a" * 201, "name_too_long"),
        ("create_client", "email", "not-an-email", "invalid_email"),
        ("create_client", "email", "a@b", "invalid_email"),
        ("create_client", "email", "a" * 250 + "@x.test", "invalid_email"),
        ("add_contact", "name", "   ", "name_blank"),
        ("add_contact", "name", "a" * 201, "name_too_long"),
        ("add_contact", "email", "two@@signs.test", "invalid_email"),
        ("add_contact", "relationship", "r" * 201, "name_too_long"),
        ("set_away", "text", "", "away_text_blank"),
        ("set_away", "text", " \n\u200b ", "away_text_blank"),
        ("set_away", "text", "a" * 601, "away_text_too_long"),
        ("set_away", "text", "😀" * 601, "away_text_too_long"),
        ("login", "email", "not-an-email", "sign_in_failed"),
        ("login", "password", "wrong password!", "sign_in_failed"),
        ("login", "password", "", "sign_in_failed"),
        ("send_message", "idempotency_key", "", "invalid_input"),
        ("send_message", "idempotency_key", "   ", "invalid_idempotency_key"),
        ("send_message", "idempotency_key", "a\tb", "invalid_idempotency_key"),
        ("send_message", "idempotency_key", "\u200b", "invalid_idempotency_key"),
    ],
)
def test_input_domain_rules_refuse_with_a_specific_code(
    ctx: Ctx, route: str, field: str, value: Any, code: str
):
    r_ = ROUTES[route]
    body = {**r_.valid(ctx), field: value}
    refused(ctx, r_.who, r_.method, r_.path(ctx), status=422, code=code, **_json(body))


@pytest.mark.parametrize(
    ("field", "value", "status", "code"),
    [
        ("name", "   ", 422, "name_blank"),
        ("name", "a" * 201, 422, "name_too_long"),
        ("email", "nope", 422, "invalid_email"),
        ("password", "short", 422, "password_too_short"),
        ("roles", ["account_owner"], 403, "not_permitted"),
        ("roles", ["clinician"], 422, "access_level_required"),
        ("export_client_data", True, 422, "export_needs_practice_manager"),
    ],
)
def test_input_add_member_domain_rules_refuse_with_a_specific_code(
    ctx: Ctx, field: str, value: Any, status: int, code: str
):
    r_ = ROUTES["add_member"]
    body = {**r_.valid(ctx), field: value}
    refused(ctx, r_.who, r_.method, r_.path(ctx), status=status, code=code, **_json(body))


def test_input_failed_sign_in_is_audited_and_changes_nothing_else(ctx: Ctx):
    """A failed sign-in for an unknown email is the one refusal that writes: one
    `signin.failed` audit row (RC1), holding neither the email nor the password."""
    engine = ctx.world.runtime.db.engine
    email = f"nobody-{uuid.uuid4().hex}@nowhere.test"
    before = snapshot(engine)
    r = ctx.nobody.post("/api/v1/auth/login", json={"email": email, "password": "Guess-" + email})
    assert assert_error_shape(r)["code"] == "sign_in_failed"
    after = snapshot(engine)
    changed = {t for t in before if before[t] != after[t]}
    assert changed == {"audit_log", "audit_heads", "signin_failures"}  # + lockout counters
    new = [row for row in after["audit_log"] if row not in before["audit_log"]]
    assert len(new) == 1
    assert "signin.failed" in new[0]
    assert email not in repr(new[0])


# --- ids in paths -------------------------------------------------------------------------

PATH_ROUTES = {
    "send_message": ("POST", "/api/v1/conversations/{}/messages"),
    "mark_read": ("POST", "/api/v1/conversations/{}/read"),
    "add_contact": ("POST", "/api/v1/clients/{}/contacts"),
    "open_conversation": ("GET", "/api/v1/conversations/{}"),
    "remove_message": ("DELETE", "/api/v1/conversations/{}/messages/1"),
}
PATH_BODIES: dict[str, Callable[[], Any]] = {
    "send_message": lambda: {"text": "Hello", "idempotency_key": key()},
    "mark_read": lambda: {"seq": 1},
    "add_contact": lambda: {"name": "Pia Partner"},
    "open_conversation": lambda: None,
    "remove_message": lambda: None,
}
BAD_PATH_IDS = ["0", "-1", "abc", "1.5", "1e3", "%00", "true"] + [
    str(v) for v in (2**62 + 1, 2**63, 10**30)
]


def _who(route: str) -> str:
    return "olivia" if route == "add_contact" else "carl"


@pytest.mark.parametrize("route", list(PATH_ROUTES))
@pytest.mark.parametrize("bad", BAD_PATH_IDS)
def test_input_malformed_or_out_of_range_path_ids_are_422(ctx: Ctx, route: str, bad: str):
    method, path = PATH_ROUTES[route]
    body = PATH_BODIES[route]()
    kwargs = _json(body) if body is not None else {}
    refused(ctx, _who(route), method, path.format(bad), status=422, code="invalid_input", **kwargs)


@pytest.mark.parametrize("route", list(PATH_ROUTES))
def test_pm7_unknown_ids_and_other_practices_ids_answer_the_same_404(ctx: Ctx, route: str):
    """PM7: the other practice's conversation (or client) is refused exactly as one that
    does not exist: same status, same body."""
    method, path = PATH_ROUTES[route]
    other = ctx.id("zoe") if route == "add_contact" else ctx.conv_b
    answers = []
    for target in (other, ctx.unknown, 999_999_999):
        body = PATH_BODIES[route]()
        kwargs = _json(body) if body is not None else {}
        answers.append(
            refused(
                ctx,
                _who(route),
                method,
                path.format(target),
                status=404,
                code="not_found",
                **kwargs,
            )
        )
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize("route", ["send_message", "mark_read", "open_conversation"])
@pytest.mark.parametrize("who", ["bea", "owen"])
def test_pm7_other_practice_members_cannot_touch_a_conversation(ctx: Ctx, route: str, who: str):
    method, path = PATH_ROUTES[route]
    body = PATH_BODIES[route]()
    kwargs = _json(body) if body is not None else {}
    mine = refused(
        ctx, who, method, path.format(ctx.conv_a), status=404, code="not_found", **kwargs
    )
    body = PATH_BODIES[route]()
    kwargs = _json(body) if body is not None else {}
    nothing = refused(
        ctx, who, method, path.format(ctx.unknown), status=404, code="not_found", **kwargs
    )
    assert mine == nothing


@pytest.mark.parametrize(
    ("field", "other", "who"),
    [
        ("member_ids", lambda c: [c.id("bea")], "carl"),
        ("member_ids", lambda c: [c.id("owen"), c.id("erin")], "carl"),
        ("client_id", lambda c: c.id("zoe"), "olivia"),
        ("contact_id", lambda c: c.contact_b, "olivia"),
    ],
    ids=["member", "member_among_mine", "client", "contact"],
)
def test_pm7_other_practice_ids_in_bodies_answer_like_unknown_ids(
    ctx: Ctx, field: str, other: Callable[[Ctx], Any], who: str
):
    def body(value: Any) -> dict[str, Any]:
        b: dict[str, Any] = {"text": "Hello", "idempotency_key": key(), "member_ids": []}
        b[field] = value
        return b

    url = "/api/v1/conversations"
    theirs = refused(ctx, who, "POST", url, status=404, code="not_found", **_json(body(other(ctx))))
    unknown = [ctx.unknown] if field == "member_ids" else ctx.unknown
    nobody = refused(ctx, who, "POST", url, status=404, code="not_found", **_json(body(unknown)))
    assert theirs == nobody


def test_pm7_other_practice_clinician_as_primary_clinician_is_unknown(ctx: Ctx):
    url = "/api/v1/clients"
    theirs = refused(
        ctx,
        "olivia",
        "POST",
        url,
        status=404,
        code="not_found",
        json={"name": "Cleo Client", "primary_clinician_id": ctx.id("bea")},
    )
    nobody = refused(
        ctx,
        "olivia",
        "POST",
        url,
        status=404,
        code="not_found",
        json={"name": "Cleo Client", "primary_clinician_id": ctx.unknown},
    )
    assert theirs == nobody


@pytest.mark.parametrize("field", ["client_id", "contact_id"])
def test_pm7_client_passing_other_practice_ids_is_refused(ctx: Ctx, field: str):
    value = ctx.id("zoe") if field == "client_id" else ctx.contact_b
    refused(
        ctx,
        "alex",
        "POST",
        "/api/v1/conversations",
        json={
            "member_ids": [ctx.id("carl")],
            field: value,
            "text": "Hello",
            "idempotency_key": key(),
        },
    )


def test_pm7_client_cannot_read_or_send_in_another_practice(ctx: Ctx):
    for method, path in (PATH_ROUTES["send_message"], PATH_ROUTES["open_conversation"]):
        body = {"text": "Hello", "idempotency_key": key()} if method == "POST" else None
        kwargs = _json(body) if body is not None else {}
        refused(
            ctx, "alex", method, path.format(ctx.conv_b), status=404, code="not_found", **kwargs
        )


def test_input_refusals_by_role_change_nothing(ctx: Ctx):
    """Valid input from someone who may not do it: a 4xx with a reason, nothing stored."""
    refused(
        ctx,
        "carl",
        "PATCH",
        "/api/v1/practice/messaging",
        status=403,
        code="not_permitted",
        json={"team_messaging": False},
    )
    refused(
        ctx,
        "alex",
        "PATCH",
        "/api/v1/practice/messaging",
        status=(403, 404),
        json={"team_messaging": False},
    )
    refused(ctx, "alex", "PUT", "/api/v1/me/away", status=(403, 404), json={"on": True})
    refused(
        ctx,
        "carl",
        "POST",
        f"/api/v1/clients/{ctx.id('jordan')}/contacts",
        status=404,
        code="not_found",
        json={"name": "Pia Partner"},
    )
    refused(
        ctx,
        "carl",
        "POST",
        "/api/v1/conversations",
        status=404,
        code="not_found",
        json={"client_id": ctx.id("jordan"), "text": "Hi", "idempotency_key": key()},
    )
    refused(
        ctx,
        "carl",
        "POST",
        "/api/v1/conversations",
        status=403,
        json={"member_ids": [ctx.id("dora")], "text": "Hi", "idempotency_key": key()},
    )
    refused(
        ctx,
        "carl",
        "POST",
        "/api/v1/conversations",
        status=(403, 422),
        json={"member_ids": [], "text": "Hi", "idempotency_key": key()},
    )
    refused(
        ctx,
        "olivia",
        "POST",
        "/api/v1/conversations",
        status=422,
        code="contact_not_of_client",
        json={
            "client_id": ctx.id("alex"),
            "contact_id": ctx.id("pat"),
            "text": "Hi",
            "idempotency_key": key(),
        },
    )
    refused(
        ctx,
        "olivia",
        "POST",
        "/api/v1/clients",
        status=422,
        code="not_a_clinician",
        json={"name": "Cleo Client", "primary_clinician_id": ctx.id("bill")},
    )
    refused(
        ctx,
        "olivia",
        "POST",
        "/api/v1/conversations",
        status=422,
        code="too_many_recipients",
        json={
            "member_ids": list(range(1, 30)),
            "text": "Hi",
            "idempotency_key": key(),
        },
    )


def test_input_reused_idempotency_key_for_another_conversation_is_409(ctx: Ctx):
    k = key()
    r = ctx.world.api("carl").post(
        f"/api/v1/conversations/{ctx.conv_a}/messages", json={"text": "one", "idempotency_key": k}
    )
    assert r.status_code == 201, r.text
    other = start(ctx.world, "carl", members=("erin",)).conversation.id
    refused(
        ctx,
        "carl",
        "POST",
        f"/api/v1/conversations/{other}/messages",
        status=409,
        code="idempotency_key_reused",
        json={"text": "two", "idempotency_key": k},
    )


# --- query parameters: NUL and int4 bounds (PostgreSQL) -----------------------------------


@pytest.mark.parametrize("path", ["/api/v1/clients/search", "/api/v1/recipients/search"])
def test_input_nul_in_search_term_is_not_a_500(ctx: Ctx, path: str):
    r = ctx.world.api("olivia").post(path, json={"q": "al\x00ex"})
    assert r.status_code < 500, r.text


@pytest.mark.parametrize("path", ["/api/v1/clients/search", "/api/v1/recipients/search"])
@pytest.mark.parametrize(
    "body", [{"q": "x" * 101}, {"q": 5}, {"q": "al", "limit": 0}, {"q": "al", "extra": 1}]
)
def test_input_bad_search_body_is_a_422(ctx: Ctx, path: str, body: dict[str, object]):
    r = ctx.world.api("olivia").post(path, json=body)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("param", ["before_seq", "after_seq"])
def test_input_seq_bounds_in_query_are_not_a_500(ctx: Ctx, param: str):
    r = ctx.world.api("carl").get(f"/api/v1/conversations/{ctx.conv_a}", params={param: 2**31})
    assert r.status_code < 500, r.text


@pytest.mark.parametrize("param", ["before_seq", "after_seq", "limit"])
@pytest.mark.parametrize("value", ["-1", "abc", str(2**63), str(10**30), "1.5"])
def test_input_bad_query_parameters_are_422(ctx: Ctx, param: str, value: str):
    refused(
        ctx,
        "carl",
        "GET",
        f"/api/v1/conversations/{ctx.conv_a}",
        status=422,
        code="invalid_input",
        params={param: value},
    )


def test_input_nul_in_api_token_name_is_refused(ctx: Ctx):
    refused(ctx, "olivia", "POST", "/api/v1/tokens", json={"name": "ci\x00bot"})


# --- fuzzing the send route ---------------------------------------------------------------

SPECIAL = st.sampled_from(
    [
        "",
        " ",
        "\u200b",
        ":grin:",
        ":nope:",
        "\x00",
        "\ud800",
        "\udfff",
        "\r\n",
        "<script>alert(1)</script>",
        "a" * 5001,
        "😀" * 5001,
        ":grin:" * 900,
        "𝕏" * 10,
    ]
)
ANY_TEXT = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=60),
    SPECIAL,
    st.lists(SPECIAL, max_size=4).map("".join),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    ANY_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
SEND_BODIES = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.one_of(ANY_TEXT, JSON_VALUES),
            "idempotency_key": st.one_of(ANY_TEXT, JSON_VALUES),
            "extra": JSON_VALUES,
        },
    ),
    JSON_VALUES,
)


def _messages_and_audit(ctx: Ctx) -> tuple[int, int]:
    with ctx.world.runtime.db.engine.connect() as conn:
        m = conn.execute(
            select(func.count())
            .select_from(MessageRow)
            .where(MessageRow.conversation_id == ctx.conv_a)
        ).scalar_one()
        a = conn.execute(
            select(func.count())
            .select_from(AuditRow)
            .where(AuditRow.chain_id == ctx.world.practice_a)
        ).scalar_one()
    return m, a


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        SEND_BODIES.map(lambda b: ("json", b)),
        ANY_TEXT.map(lambda t: ("raw", t)),
        st.binary(max_size=200).map(lambda b: ("bytes", b)),
    ),
    who=st.sampled_from(["carl", "alex"]),
)
def test_ms1_fuzzed_send_bodies_never_cause_a_500(ctx: Ctx, body: tuple[str, Any], who: str):
    kind, value = body
    if kind == "json":
        content = json.dumps(value).encode()
    elif kind == "raw":
        content = value.encode("utf-8", "surrogatepass")
    else:
        content = value
    before = _messages_and_audit(ctx)
    r = ctx.world.api(who).post(
        f"/api/v1/conversations/{ctx.conv_a}/messages",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert r.status_code < 500, (r.status_code, r.text[:300], content[:300])
    if r.status_code >= 400:
        assert_error_shape(r)
        assert _messages_and_audit(ctx) == before
    else:
        assert r.status_code in (200, 201), r.text
        text = r.json()["message"]["text"]
        assert isinstance(text, str) and 1 <= len(text) <= 5000
