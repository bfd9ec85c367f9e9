"""API fuzzing with schemathesis over the OpenAPI description, as each role (issue 8).

Every operation of `/api/v1/openapi.json` is fuzzed with valid and invalid input as
an account owner (olivia), a basic clinician (carl), a biller (bill), a client (alex,
by session cookie) and the other practice's owner (owen). The answer must never be a
server error, and its status, content type, body and headers must be ones the
description documents (issue 2: the description matches what the server answers).

Path ids are sometimes real: conversations, messages, clients, members, contacts and
spare API tokens of both practices are seeded, and a hook mixes their ids into the
generated path parameters, so the fuzzer gets past "404 not found" as well as
exploring bad input.

Authentication (T02, schemathesis' `ignored_auth`): the description declares the API
token and the session cookie (web/openapi.py). For every secured operation that answers
2xx, the check sends the same request again without credentials and with wrong ones
(a made-up bearer token, a made-up session cookie) and expects 401 or 403; it does so
once per operation (as schemathesis' own runner does), not for every case.

Bounded for CI: a fixed seed, derandomized, at most MAX_EXAMPLES generated cases per
operation and role (plus schemathesis' deterministic examples and coverage cases).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from schemathesis.openapi.checks import IgnoredAuth
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi import checks as openapi_checks
from starlette.types import ASGIApp, Receive, Scope, Send

from confide.domain.actors import Actor, PartyKind, Via
from confide.runtime import Runtime, build_runtime
from confide.services import clients, practice, sessions, team
from confide.store.uow import unit_of_work
from confide.web.app import API_PREFIX, create_app
from confide.web.openapi import PUBLIC_OPERATIONS
from tests.conftest import make_settings
from tests.personas import World, build_world, start

MAX_EXAMPLES = 25
SEED = 20261127
ROLES = ("olivia", "carl", "bill", "alex", "owen")
SESSION_COOKIE = "__Host-confide_session"
BASE_URL = "https://testserver"

# The secured operations `ignored_auth` has seen refuse missing and wrong credentials.
AUTH_ENFORCED: set[str] = set()


def ignored_auth(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """schemathesis' `ignored_auth`, remembering across cases (like its own runner does)
    which operations it has already seen refuse missing and wrong credentials: the
    probes are then sent once per operation, not for every successful case."""
    ctx.auth_enforced_operations = AUTH_ENFORCED
    return openapi_checks.ignored_auth(ctx, response, case)


CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
    ignored_auth,
]

# (method, path, role) -> the reason a case fails today. Each is a real problem reported
# for the lead; a strict xfail keeps it visible until the fix lands. Role "*" = every role.
KNOWN_FAILURES: dict[tuple[str, str, str], str] = {}


def _description() -> dict[str, Any]:
    """The OpenAPI description, from an app on a throwaway runtime (no database touched:
    the description does not depend on data)."""
    with TemporaryDirectory() as tmp:
        rt = build_runtime(make_settings(Path(tmp), database_url=""), run_migrations=False)
        try:
            return create_app(rt).openapi()
        finally:
            rt.close()


schema = schemathesis.openapi.from_dict(
    _description(),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # No generated credentials: each role sends its own (`_credentials`), and a
            # made-up `Authorization` header would override a client's session cookie.
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


class AppUnderTest:
    """The fuzzed app, for the requests schemathesis sends by itself (`ignored_auth`'s
    probes, which go through `schema.app`, not through the test's client). Set by the
    `fuzzed` fixture. Like that fixture's client, it runs the app without its lifespan
    (no realtime hub or relay in the background)."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.app is not None, "the fuzzed fixture sets the app"
        await self.app(scope, receive, send)


APP_UNDER_TEST = AppUnderTest()
schema.app = APP_UNDER_TEST


@dataclass
class Seeded:
    """Real ids of the fuzzed world, by path parameter name."""

    ids: dict[str, list[int]] = field(default_factory=dict)


SEEDED = Seeded()


@schema.hook("flatmap_path_parameters")
def _real_ids(context: schemathesis.HookContext, path_parameters: dict[str, Any]) -> Any:
    """Mix the seeded world's ids into generated integer path ids (half the time)."""
    del context
    choices = []
    for name, value in (path_parameters or {}).items():
        known = SEEDED.ids.get(name)
        if known and isinstance(value, int) and not isinstance(value, bool):
            choices.append((name, known))
    if not choices:
        return st.just(path_parameters)
    overrides = st.fixed_dictionaries(
        {name: st.one_of(st.none(), st.sampled_from(known)) for name, known in choices}
    )
    return overrides.map(
        lambda o: {**path_parameters, **{k: v for k, v in o.items() if v is not None}}
    )


VALID_TEXT = ("Hello :grin:", "See you Tuesday at 3")
# Search terms (in bodies: `POST …/search`) that find something in the seeded world.
SEARCH_TERMS = {"q": ("al", "Client", "Test", "jor"), "prefix": (":gr", ":thumbs", "smi")}
BODY_ID_KINDS = {
    "member_ids": "member_id",
    "supervisee_id": "member_id",
    "primary_clinician_id": "member_id",
}


@schema.hook("flatmap_body")
def _real_body_values(context: schemathesis.HookContext, body: Any) -> Any:
    """Mix real ids, sendable text and printable idempotency keys into JSON bodies (half
    the time per field), so writes such as sending a message get past input validation
    to the domain rules and to success."""
    del context
    if not isinstance(body, dict):
        return st.just(body)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for name, value in body.items():
        known = SEEDED.ids.get(BODY_ID_KINDS.get(name, name), [])
        if name == "member_ids" and isinstance(value, list) and known:
            fields[name] = st.lists(st.sampled_from(known), min_size=1, max_size=2, unique=True)
        elif known and isinstance(value, int) and not isinstance(value, bool):
            fields[name] = st.sampled_from(known)
        elif name == "text" and isinstance(value, str):
            fields[name] = st.sampled_from(VALID_TEXT)
        elif name in SEARCH_TERMS and isinstance(value, str):
            fields[name] = st.sampled_from(SEARCH_TERMS[name])
        elif name == "idempotency_key" and isinstance(value, str):
            fields[name] = st.text(alphabet="0123456789abcdef-", min_size=1, max_size=12)
    if not fields:
        return st.just(body)
    overrides = st.fixed_dictionaries({k: st.one_of(st.none(), v) for k, v in fields.items()})
    return overrides.map(lambda o: {**body, **{k: v for k, v in o.items() if v is not None}})


def _seed(w: World) -> dict[str, list[int]]:
    sent = [
        start(w, "carl", client="alex", text="Fuzz one"),
        start(w, "olivia", members=("carl", "bill"), text="Fuzz two"),
        start(w, "betty", client="jordan", contact="pat", text="Fuzz three"),
        start(w, "owen", members=("bea",), text="Fuzz four"),
    ]
    spare_tokens = []
    for name in ("olivia", "carl", "bill", "owen"):
        with unit_of_work(w.runtime.db) as uow:
            token_id, _token = sessions.create_api_token(uow, w.actor(name), name="spare")
        spare_tokens.append(token_id)
    members = ["olivia", "carl", "bill", "fiona", "gus", "owen", "bea"]
    return {
        "conversation_id": sorted({s.conversation.id for s in sent}),
        "message_id": sorted({s.message.id for s in sent}),
        "client_id": [w.id(n) for n in ("alex", "jordan", "casey", "nora", "zoe")],
        "member_id": [w.id(n) for n in members],
        "contact_id": [w.id("pat")],
        "token_id": spare_tokens,
    }


@dataclass
class Fuzzed:
    world: World
    client: schemathesis_asgi.ASGIClient
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fuzzed(runtime: Runtime) -> Iterator[Fuzzed]:
    """The world and an in-process client of the real app (like `World.api`, without
    the app's lifespan: no realtime hub or relay in the background)."""
    w = build_world(runtime)
    SEEDED.ids = _seed(w)
    APP_UNDER_TEST.app = create_app(runtime)
    client = schemathesis_asgi.ASGIClient(APP_UNDER_TEST.app, base_url=BASE_URL)
    try:
        yield Fuzzed(w, client)
    finally:
        SEEDED.ids = {}
        APP_UNDER_TEST.app = None
        client.close()


def _restore_switches(w: World) -> None:
    """Undo what earlier operations' fuzzing most often switches off (the practices'
    messaging, members' and clients' messaging), so later operations and roles still
    reach their success paths. The fuzz is per module and in a fixed order, so this is
    about coverage, not isolation."""
    db = w.runtime.db
    for owner in ("olivia", "owen"):
        with unit_of_work(db) as uow:
            practice.set_messaging_switches(uow, w.actor(owner), team=True, clients=True)
    for member in ("olivia", "carl", "bill", "betty"):
        with unit_of_work(db) as uow:
            team.set_member_messaging(uow, w.actor("olivia"), w.id(member), enabled=True)
    with unit_of_work(db) as uow:
        team.set_member_messaging(uow, w.actor("owen"), w.id("owen"), enabled=True)
    for client, owner in (("alex", "olivia"), ("jordan", "olivia"), ("zoe", "owen")):
        with unit_of_work(db) as uow:
            clients.enable_client_messaging(uow, w.actor(owner), w.id(client))


def _credentials(w: World, name: str) -> dict[str, str]:
    """Fresh credentials per operation, so a fuzzed sign-out or token revocation in one
    operation does not leave the next one unauthenticated."""
    actor = w.actor(name)
    with unit_of_work(w.runtime.db) as uow:
        if actor.party.kind is PartyKind.MEMBER:
            _id, token = sessions.create_api_token(uow, actor, name="fuzz")
            return {"Authorization": f"Bearer {token}"}
        session_id = sessions.start_session(
            uow, Actor(actor.practice_id, actor.party, Via.MAGIC_LINK)
        )
    return {"Cookie": f"{SESSION_COOKIE}={session_id}"}


def _known_failure(case: schemathesis.Case, role: str) -> str | None:
    method, path = case.operation.method.upper(), case.operation.path
    return KNOWN_FAILURES.get((method, path, role)) or KNOWN_FAILURES.get((method, path, "*"))


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_description(
    case: schemathesis.Case, role: str, fuzzed: Fuzzed, request: pytest.FixtureRequest
) -> None:
    reason = _known_failure(case, role)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    headers = request.node.stash.get(_HEADERS, None)
    if headers is None:
        _restore_switches(fuzzed.world)
        headers = request.node.stash[_HEADERS] = _credentials(fuzzed.world, role)
    case.call_and_validate(base_url=BASE_URL, session=fuzzed.client, headers=headers, checks=CHECKS)


_HEADERS = pytest.StashKey[dict[str, str]]()


def test_every_operation_is_fuzzed() -> None:
    """The description has the operations the fuzzer walks (a guard against an empty or
    misloaded description silently fuzzing nothing)."""
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 30
    assert all(op.path.startswith(API_PREFIX) for op in operations)


def test_t02_ignored_auth_fails_an_operation_that_does_not_enforce_its_security(
    fuzzed: Fuzzed,
) -> None:
    """The check is real here: the VAPID public key answers without credentials, and a
    description that claims it needs them fails `ignored_auth` (its probe without
    credentials gets 200), while the true description passes."""
    description = _description()
    key_path = f"{API_PREFIX}/push/vapid-public-key"
    assert description["paths"][key_path]["get"]["security"] == []
    del description["paths"][key_path]["get"]["security"]  # claims the global security
    wrong = schemathesis.openapi.from_dict(description)
    wrong.app = APP_UNDER_TEST
    headers = _credentials(fuzzed.world, "olivia")
    case = wrong[key_path]["GET"].Case()
    with pytest.raises(BaseExceptionGroup) as failed:
        case.call_and_validate(
            base_url=BASE_URL,
            session=fuzzed.client,
            headers=headers,
            checks=[openapi_checks.ignored_auth],
        )
    (failure,) = failed.value.exceptions
    assert isinstance(failure, IgnoredAuth)
    assert "API accepts requests without authentication" in str(failure)
    true_case = schema[key_path]["GET"].Case()
    true_case.call_and_validate(
        base_url=BASE_URL,
        session=fuzzed.client,
        headers=headers,
        checks=[openapi_checks.ignored_auth],
    )


def test_t02_ignored_auth_probed_the_secured_operations(request: pytest.FixtureRequest) -> None:
    """After the fuzz: `ignored_auth` saw most secured operations refuse missing and
    wrong credentials (each one that answered 2xx to some role)."""
    fuzzed_cases = [i for i in request.session.items if i.name.startswith("test_api_conforms")]
    if not fuzzed_cases:
        pytest.skip("the fuzz did not run in this session")
    secured = [
        op
        for op in (r.ok() for r in schema.get_all_operations())
        if op.definition.raw.get("security") != []
    ]
    missed = sorted({op.label for op in secured} - AUTH_ENFORCED)
    print(f"ignored_auth: {len(AUTH_ENFORCED)} of {len(secured)} secured operations probed")
    print("not probed (no 2xx):", *missed, sep="\n  ")
    assert len(AUTH_ENFORCED) >= len(secured) * 3 // 4, sorted(AUTH_ENFORCED)


@pytest.mark.parametrize(
    "method_path",
    sorted(PUBLIC_OPERATIONS),
    ids=[f"{method.upper()} {path}" for method, path in sorted(PUBLIC_OPERATIONS)],
)
def test_t02_the_public_operations_answer_without_credentials(
    method_path: tuple[str, str], fuzzed: Fuzzed
) -> None:
    """The converse of `ignored_auth`: what the description calls public does not answer
    401 without credentials (an input error or a refusal of another kind is fine)."""
    method, path = method_path
    case = schema[API_PREFIX + path][method.upper()].Case()
    response = case.call(base_url=BASE_URL, session=fuzzed.client)
    assert response.status_code != 401, response.text


STATEFUL_CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.use_after_free,
    openapi_checks.ensure_resource_availability,
]
STATEFUL_EXAMPLES = 40  # scenarios judged; ~25 s on this loaded 2-core machine
STATEFUL_STEPS = 6
STATEFUL_ATTEMPTS = 6  # Hypothesis runs (seeds) to reach STATEFUL_EXAMPLES scenarios


@dataclass
class Chains:
    """What the stateful run did that the two checks look at."""

    steps: int = 0
    scenarios: int = 0
    after_create: list[str] = field(default_factory=list)  # linked from a 2xx POST
    after_delete: list[str] = field(default_factory=list)  # linked from a 2xx DELETE
    failures: list[str] = field(default_factory=list)  # every check that failed, as it failed
    inconsistent_runs: int = 0


def test_t02_stateful_use_after_free_and_resource_availability(fuzzed: Fuzzed) -> None:
    """T02's stateful checks, on schemathesis' stateful phase with the links it infers
    from the description (a POST's answer holds the id a GET, PATCH or DELETE takes):
    as the account owner, a resource just created must be there (no 404 with every
    parameter from the link: `ensure_resource_availability`), and one just deleted
    must be gone (`use_after_free`).

    The server keeps its state between scenarios (ids grow, lists lengthen, exports
    are made and deleted), so when Hypothesis replays a choice sequence the server
    may answer differently and the state machine draws differently: Hypothesis then
    raises `Flaky` ("a bundle that was unexpectedly empty"). schemathesis' own runner
    treats that as the end of one exploration, not a finding (its stateful executor's
    `_classify_flaky`), and so does this test: every check failure is recorded as it
    happens (and fails the test), an inconsistent replay ends that Hypothesis run, and
    the next run starts from another seed until STATEFUL_EXAMPLES scenarios were judged."""
    stateful = schemathesis.openapi.from_dict(
        _description(),
        config=schemathesis.Config.from_dict(
            {
                "seed": SEED,
                "generation": {"with-security-parameters": False},
                "phases": {"stateful": {"enabled": True}},
            }
        ),
    )
    stateful.app = APP_UNDER_TEST
    _restore_switches(fuzzed.world)
    headers = _credentials(fuzzed.world, "olivia")
    chains = Chains()

    class Machine(stateful.as_state_machine()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            chains.scenarios += 1

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": BASE_URL, "session": fuzzed.client, "headers": headers}

        def validate_response(  # type: ignore[override]
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            kwargs.pop("additional_checks", None)
            chains.steps += 1
            parent = self.recorder.find_parent(case_id=case.id)
            answer = parent and self.recorder.find_response(case_id=parent.id)
            # A step on the resource its link's source just made or deleted (its path
            # extends the source's): the kind of step the two checks judge.
            step = f"{case.operation.label} {response.status_code}"
            if parent and answer and 200 <= answer.status_code < 300:
                step = f"{parent.operation.label} -> {step}"
                if case.path.startswith(parent.path.split("{")[0]):
                    if parent.operation.method.upper() == "POST":
                        chains.after_create.append(step)
                    elif parent.operation.method.upper() == "DELETE":
                        chains.after_delete.append(step)
            try:
                case.validate_response(
                    response,
                    checks=STATEFUL_CHECKS,
                    transport_kwargs=kwargs,
                    recorder=self.recorder,
                )
            except Exception as failure:
                chains.failures.append(f"{step}: {failure}")
                raise

    for attempt in range(STATEFUL_ATTEMPTS):
        if chains.scenarios >= STATEFUL_EXAMPLES:
            break
        Machine.TestCase.settings = settings(
            max_examples=STATEFUL_EXAMPLES - chains.scenarios,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        try:
            seed(SEED + attempt)(Machine).TestCase().runTest()
        except Flaky:
            if chains.failures:
                raise
            chains.inconsistent_runs += 1
    print(
        f"stateful: {chains.scenarios} scenarios, {chains.steps} steps,",
        f"{chains.inconsistent_runs} runs ended by an inconsistent replay;",
        *sorted(set(chains.after_create + chains.after_delete)),
    )
    assert not chains.failures, chains.failures
    assert chains.scenarios >= STATEFUL_EXAMPLES, (
        f"only {chains.scenarios} scenarios in {STATEFUL_ATTEMPTS} runs"
    )
    # Linked steps on created resources happen in every run; whether one also follows
    # a successful DELETE depends on the rule order, which varies between processes
    # (schemathesis' inferred links), so it is printed, not required.
    assert chains.after_create, "no linked step on a resource just created"
