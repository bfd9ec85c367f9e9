"""PM7 / SECURITY-TESTS T01: the authorization matrix over every API route.

The policy is written down as data (`MATRIX`): for each (method, path template) of the
JSON API, how to build a valid request against objects of practice A, and for each actor
the expected outcome class:

  "ok"        2xx
  "404"       missing-or-forbidden: the body is byte-identical to the answer for ids that
              do not exist (PM7)
  "403:code"  a refusal with a reason code, only about something the actor may already
              see (a setting of their own practice, a team member, a conversation they
              are in, a client they have access to)
  "401"       not signed in

`test_pm7_matrix_lists_every_api_route` derives the route list from the app, so a new
route without a matrix entry fails the suite.

Conventions of the expectations (SPEC "People and plans", EN2, PM1-PM7, MS6; the
choices where SPEC is silent are the ones documented in `confide.domain.policy`):

- Member-only routes answer client-side actors (clients, contacts) 404 "No such
  resource.", exactly like a route that does not exist (`acting_member`).
- A member of the other practice gets 404 for every object of practice A, whatever
  their role; on routes without ids they act on their own practice ("ok"), and no
  response they get may contain anything of practice A.
- Conversations are opened, written and read by their participants only. Members who are
  not participants (the account owner and a supervisor included) get 404: they reach a
  client's history through transcripts (TR1, `/clients/{id}/transcript`).
- Any error an actor gets about an object they may not know exists is byte-identical to
  the error for a missing id (a 403 for a permission the actor lacks, given before the
  object is looked up, is identical for a missing id too).

Worlds: GET routes share one module-scoped world; write routes whose refusal changes
nothing, and writes that only add things, share a second one; every write expected to
change existing state (or marked as a bug) gets a fresh world (`world` fixture).
"""

import base64
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import Response
from starlette.testclient import TestClient

from confide.domain.actors import Actor, PartyKind, Via
from confide.domain.entities import AccessLevel, Role
from confide.domain.exports import ExportScope, ExportStatus
from confide.jobs import exports as export_jobs
from confide.runtime import Runtime
from confide.services import email_links, push, sessions, team
from confide.services import exports as export_service
from confide.services.links import Purpose, issue_link
from confide.store.uow import unit_of_work
from confide.web.app import API_PREFIX, create_app
from confide.web.deps import session_cookie_name
from tests.personas import MEMBERS_A, PASSWORD, World, build_world, start

MISSING = 999_999_999  # an id no object has: the "truly missing" reference of PM7
ORIGIN = "https://testserver"  # the app's own origin (a browser sends it on every POST)

# --- the actors and the access they have, from SPEC ------------------------------------

ACTORS = (
    "anonymous",
    "olivia",  # account owner (+ clinician, entire practice)
    "priya",  # practice manager with export_client_data
    "pete",  # practice manager without export
    "carl",  # clinician, basic: primary of alex and casey
    "fiona",  # clinician, full client list
    "betty",  # clinician, billing: primary of jordan
    "sam",  # supervisor (+ clinician basic) of carl
    "gus",  # supervisor of nobody, granted nora
    "bill",  # biller
    "sally",  # scheduler
    "dora",  # clinician, basic, EN2 box off
    "ivy",  # clinician, deactivated after her API token was issued (T01, T04)
    "alex",  # client of carl
    "pat",  # contact (parent) of jordan
    "owen",  # account owner of the OTHER practice
    "zoe",  # client of the other practice
    "alex_link",  # alex through a notification's portal link to conv_client (PA1, PA6)
)
STAFF_A = ACTORS[ACTORS.index("olivia") : ACTORS.index("ivy")]  # the active staff of A
SIGNED_IN = (*STAFF_A, "alex", "pat", "owen", "zoe")  # not ivy: she was removed
MANAGERS = ("olivia", "priya", "pete")  # add, change and remove team members
OTHER_PRACTICE = ("owen", "zoe")
EXPORTERS = ("olivia", "priya")  # EX1: the owner, practice managers with export_client_data

# "Access to a client": the account owner, practice managers, billers, schedulers,
# clinicians with entire_practice or full_client_list; other clinicians when primary or
# granted; supervisors for their supervisees' clients and clients granted to them.
EVERY_CLIENT = ("olivia", "priya", "pete", "fiona", "bill", "sally")
ACCESS: dict[str, frozenset[str]] = {
    "alex": frozenset({*EVERY_CLIENT, "carl", "sam"}),  # carl primary, sam supervises carl
    "casey": frozenset({*EVERY_CLIENT, "carl", "sam"}),
    "jordan": frozenset({*EVERY_CLIENT, "betty"}),  # betty primary
    "nora": frozenset({*EVERY_CLIENT, "gus"}),  # granted to gus
}
# Editing a client (portal, messaging box, contacts): those with access, except billers,
# who see every client but do not edit them (policy choice, `confide.domain.policy`).
EDIT_ALEX = ACCESS["alex"] - {"bill"}
EDIT_JORDAN = ACCESS["jordan"] - {"bill"}


def row(
    ok: Iterable[str] = (), denied: dict[str, str] | None = None, *, public: bool = False
) -> dict[str, str]:
    """An expectation for every actor: `ok` succeed, `denied` get 403 with the given
    code, anonymous and the deactivated ivy get 401 (unless `public`), everybody else
    404."""
    out = {a: "404" for a in ACTORS}
    out["anonymous"] = out["ivy"] = "ok" if public else "401"
    if public:  # a public route does not look at anyone's credentials
        out["alex_link"] = "ok"
    for a in ok:
        out[a] = "ok"
    for a, code in (denied or {}).items():
        out[a] = f"403:{code}"
    return out


def refused(actors: Iterable[str], code: str = "not_permitted") -> dict[str, str]:
    return {a: code for a in actors}


def others(*keep: str, among: Iterable[str] = STAFF_A) -> tuple[str, ...]:
    return tuple(a for a in among if a not in keep)


# --- the matrix --------------------------------------------------------------------------

Values = dict[str, int]


@dataclass(frozen=True)
class Case:
    """How to call one route, and what each actor gets."""

    expect: dict[str, str]
    # Path parameters and body ids -> the target they name (a persona or a key of
    # `Scene.targets`). The PM7 reference request replaces every one with MISSING.
    ids: dict[str, str] = field(default_factory=dict)
    body: Callable[["Scene", Values], dict[str, Any]] | None = None
    query: str = ""
    label: str = ""
    # "read": a GET or a search; "adds": writes that only add things (or touch the caller's own
    # session, read position or away flag); "changes": changes existing objects.
    writes: str = "read"
    # Who may know the targets exist; any refusal anyone else gets must be identical
    # to the refusal for missing ids.
    visible_to: frozenset[str] = frozenset()
    # Sign in just for this request (logout ends the credentials it uses).
    own_credentials: bool = False


def _key() -> str:
    return f"authz-{uuid.uuid4().hex}"


def _start_with_client(_s: "Scene", v: Values) -> dict[str, Any]:
    return {
        "member_ids": [v["member"]],
        "client_id": v["client"],
        "text": "Checking in about Tuesday",
        "idempotency_key": _key(),
    }


def _start_team(_s: "Scene", v: Values) -> dict[str, Any]:
    return {"member_ids": [v["member"]], "text": "Team note", "idempotency_key": _key()}


def _send(_s: "Scene", _v: Values) -> dict[str, Any]:
    return {"text": "A reply", "idempotency_key": _key()}


def _push_subscription() -> dict[str, Any]:
    """A well-formed subscription of a browser (the key is not used: nothing is sent)."""
    return {
        "endpoint": f"https://push.example.test/{uuid.uuid4().hex}",
        "keys": {
            "p256dh": base64.urlsafe_b64encode(b"\x04" + bytes(64)).decode().rstrip("="),
            "auth": base64.urlsafe_b64encode(bytes(16)).decode().rstrip("="),
        },
    }


CONV_CLIENT = {"conversation_id": "conv_client"}  # carl <-> alex, started by carl
CONV_TEAM = {"conversation_id": "conv_team"}  # carl <-> dora, before dora's box went off
IN_CLIENT_CONV = frozenset({"carl", "alex"})
# PA6: the portal link's session reads and answers its conversation, nothing else.
READ_REPLY_CLIENT_CONV = IN_CLIENT_CONV | {"alex_link"}
IN_TEAM_CONV = frozenset({"carl", "dora"})
ANY_MEMBER_A = frozenset(STAFF_A)

MATRIX: dict[tuple[str, str], tuple[Case, ...]] = {
    # -- auth -----------------------------------------------------------------------------
    ("POST", "/auth/login"): (
        Case(
            row(SIGNED_IN, public=True),  # public: whoever knows carl's password signs in
            body=lambda s, _v: {"email": s.world.emails["carl"], "password": PASSWORD},
            writes="adds",
        ),
    ),
    # A portal link's session may sign out too (it ends that session only).
    ("POST", "/auth/logout"): (
        Case(row((*SIGNED_IN, "alex_link")), writes="adds", own_credentials=True),
    ),
    ("GET", "/me"): (Case(row(SIGNED_IN)),),
    ("POST", "/tokens"): (
        # Personal API tokens are for team members only.
        Case(row((*STAFF_A, "owen")), body=lambda _s, _v: {"name": "cli"}, writes="adds"),
    ),
    ("DELETE", "/tokens/{token_id}"): (
        # Only the owner of a token revokes it; for anyone else it does not exist.
        Case(
            row(["carl"]),
            ids={"token_id": "token"},
            writes="changes",
            visible_to=frozenset({"carl"}),
        ),
    ),
    # -- practice settings and team -------------------------------------------------------
    ("GET", "/practice"): (Case(row((*STAFF_A, "owen"))),),
    ("PATCH", "/practice/messaging"): (
        # Practice settings: the account owner, practice managers, entire_practice
        # clinicians (erin, olivia). Other members may see the settings: 403.
        Case(
            row((*MANAGERS, "owen"), refused(others(*MANAGERS))),
            body=lambda _s, _v: {"auto_allow_new_clients": True},
            writes="changes",
        ),
    ),
    ("GET", "/members"): (Case(row((*STAFF_A, "owen"))),),
    ("POST", "/members"): (
        Case(
            row((*MANAGERS, "owen"), refused(others(*MANAGERS))),
            body=lambda _s, _v: {
                "name": "Nia New",
                "email": f"nia.{uuid.uuid4().hex}@newhire.test",
                "roles": ["scheduler"],
            },
            writes="adds",
        ),
    ),
    ("PATCH", "/members/{member_id}"): (
        Case(
            row(MANAGERS, refused(others(*MANAGERS))),
            ids={"member_id": "carl"},
            body=lambda _s, _v: {"active": False},  # "remove team members"
            label="carl",
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
        # Only the account owner changes the account owner's record.
        Case(
            row(["olivia"], refused(others("olivia"))),
            ids={"member_id": "olivia"},
            body=lambda _s, _v: {"active": True},  # the owner cannot be deactivated
            label="olivia",
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    ("PUT", "/members/{member_id}/messaging"): (
        # EN2: settings editors change anyone's box but the owner's ...
        Case(
            row(MANAGERS, refused(others(*MANAGERS))),
            ids={"member_id": "carl"},
            body=lambda _s, _v: {"enabled": False},
            label="carl",
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
        # ... "The account owner can change it for anyone" (and only they change theirs).
        Case(
            row(["olivia"], refused(others("olivia"))),
            ids={"member_id": "olivia"},
            body=lambda _s, _v: {"enabled": False},
            label="olivia",
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    ("PUT", "/members/{member_id}/supervisees"): (
        Case(
            row(MANAGERS, refused(others(*MANAGERS))),
            ids={"member_id": "gus", "supervisee": "carl"},
            body=lambda _s, v: {"supervisee_id": v["supervisee"], "on": True},
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    ("PUT", "/me/away"): (
        # AW1: every team member controls their own away message (dora included: EN2
        # is about messaging, not about the away switch).
        Case(
            row((*STAFF_A, "owen")),
            body=lambda _s, _v: {"on": True, "text": "Back on Monday."},
            writes="adds",
        ),
    ),
    # -- clients --------------------------------------------------------------------------
    ("GET", "/clients"): (Case(row((*STAFF_A, "owen"))),),
    # Searches take the term in the body (never in the URL); they change nothing.
    ("POST", "/clients/search"): (
        Case(row((*STAFF_A, "owen")), body=lambda _s, _v: {"q": "Client"}),
    ),
    ("POST", "/clients"): (
        # Creating clients: owner, practice managers, schedulers, clinicians (policy
        # choice); a supervisor-only member and a biller see the list but may not add.
        # The other practice's owner naming practice A's clinician: 404 (no such member).
        Case(
            row(
                (*MANAGERS, "carl", "fiona", "betty", "sam", "sally", "dora"),
                refused(["gus", "bill"]),
            ),
            ids={"clinician": "carl"},
            body=lambda _s, v: {"name": "Quinn New", "primary_clinician_id": v["clinician"]},
            writes="adds",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    ("GET", "/clients/{client_id}"): (
        Case(row(ACCESS["alex"]), ids={"client_id": "alex"}, visible_to=ACCESS["alex"]),
    ),
    ("PATCH", "/clients/{client_id}/portal"): (
        Case(
            row(EDIT_ALEX, refused(["bill"])),
            ids={"client_id": "alex"},
            body=lambda _s, _v: {"messaging_enabled": False},
            writes="changes",
            visible_to=ACCESS["alex"],
        ),
    ),
    ("POST", "/clients/{client_id}/enable-messaging"): (
        # EN5 on casey (primary carl, messaging off): same people as alex.
        Case(
            row(EDIT_ALEX, refused(["bill"])),
            ids={"client_id": "casey"},
            writes="changes",
            visible_to=ACCESS["casey"],
        ),
    ),
    ("POST", "/clients/{client_id}/contacts"): (
        Case(
            row(EDIT_ALEX, refused(["bill"])),
            ids={"client_id": "alex"},
            body=lambda _s, _v: {"name": "Riley Relative", "relationship": "Partner"},
            writes="adds",
            visible_to=ACCESS["alex"],
        ),
    ),
    ("PATCH", "/contacts/{contact_id}/portal"): (
        # A contact is reached through their client (jordan): carl, sam, gus, dora have
        # no access to jordan, so pat does not exist for them.
        Case(
            row(EDIT_JORDAN, refused(["bill"])),
            ids={"contact_id": "pat"},
            body=lambda _s, _v: {"messaging_enabled": False},
            writes="changes",
            visible_to=ACCESS["jordan"],
        ),
    ),
    ("PUT", "/clients/{client_id}/access/{member_id}"): (
        # Grants: team managers. The refusal comes before the client is looked up, so
        # a member without access to jordan gets the same 403 as for a missing client.
        Case(
            row(MANAGERS, refused(others(*MANAGERS))),
            ids={"client_id": "jordan", "member_id": "carl"},
            writes="changes",
            visible_to=ACCESS["jordan"],
        ),
    ),
    ("DELETE", "/clients/{client_id}/access/{member_id}"): (
        Case(
            row(MANAGERS, refused(others(*MANAGERS))),
            ids={"client_id": "nora", "member_id": "gus"},
            writes="changes",
            visible_to=ACCESS["nora"],
        ),
    ),
    # -- conversations --------------------------------------------------------------------
    ("GET", "/conversations"): (Case(row(SIGNED_IN)),),
    ("POST", "/conversations"): (
        # PM2/PM3: members with access to alex (the other recipient, carl, has access
        # too); betty, gus, dora have no access: alex does not exist for them (404).
        # Client side: `client_id` is for team members; a client or contact writes for
        # themselves, so any client_id from them is refused before any lookup (422).
        # (PM4 for clients: the "team" case below and test_messaging_api.py.)
        Case(
            {
                **row(ACCESS["alex"]),
                **{a: "422:invalid_input" for a in ("alex", "pat", "zoe")},
            },
            ids={"member": "carl", "client": "alex"},
            body=_start_with_client,
            label="with alex",
            writes="adds",
            visible_to=frozenset({*ACCESS["alex"], "alex"}),
        ),
        # PM1: any two enabled members (erin: entire practice clinician). EN2: dora's
        # box is off, she may not send (403 about her own account). PM4: a client may
        # not start with erin (not primary, not PM/biller/scheduler/supervisor): 404.
        Case(
            row(others("dora"), refused(["dora"], "member_messaging_disabled")),
            ids={"member": "erin"},
            body=_start_team,
            label="team",
            writes="adds",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    ("GET", "/conversations/{conversation_id}"): (
        Case(
            row(READ_REPLY_CLIENT_CONV),
            ids=CONV_CLIENT,
            label="client",
            visible_to=READ_REPLY_CLIENT_CONV,
        ),
        # EN2: dora is a participant but her box is off: she cannot receive (404).
        Case(row(["carl"]), ids=CONV_TEAM, label="team", visible_to=IN_TEAM_CONV),
    ),
    ("POST", "/conversations/{conversation_id}/messages"): (
        Case(
            row(READ_REPLY_CLIENT_CONV),
            ids=CONV_CLIENT,
            body=_send,
            label="client",
            writes="adds",
            visible_to=READ_REPLY_CLIENT_CONV,
        ),
        Case(
            row(["carl"]),
            ids=CONV_TEAM,
            body=_send,
            label="team",
            writes="adds",
            visible_to=IN_TEAM_CONV,
        ),
    ),
    ("DELETE", "/conversations/{conversation_id}/messages/{message_id}"): (
        # MS6: the sender removes their message; the client sees it (403 not_sender).
        Case(
            row(["carl"], refused(["alex"], "not_sender")),
            ids={**CONV_CLIENT, "message_id": "msg_client"},
            label="client",
            writes="changes",
            visible_to=IN_CLIENT_CONV,
        ),
        Case(
            row(["carl"]),
            ids={**CONV_TEAM, "message_id": "msg_team"},
            label="team",
            writes="changes",
            visible_to=IN_TEAM_CONV,
        ),
    ),
    ("POST", "/conversations/{conversation_id}/read"): (
        Case(
            row(READ_REPLY_CLIENT_CONV),
            ids=CONV_CLIENT,
            body=lambda _s, _v: {"seq": 1},
            label="client",
            writes="adds",
            visible_to=READ_REPLY_CLIENT_CONV,
        ),
        Case(
            row(["carl"]),
            ids=CONV_TEAM,
            body=lambda _s, _v: {"seq": 1},
            label="team",
            writes="adds",
            visible_to=IN_TEAM_CONV,
        ),
    ),
    # -- records (TR1-TR3) ---------------------------------------------------------------
    # TR1: everyone with access to the client reads the transcript and chart notes; no
    # access (other practice, client side included) is a missing client (PM7).
    ("GET", "/clients/{client_id}/transcript"): (
        Case(row(ACCESS["alex"]), ids={"client_id": "alex"}, visible_to=ACCESS["alex"]),
    ),
    ("GET", "/clients/{client_id}/chart-notes"): (
        Case(row(ACCESS["alex"]), ids={"client_id": "alex"}, visible_to=ACCESS["alex"]),
    ),
    ("POST", "/clients/{client_id}/chart-notes"): (
        # TR2: a chart note writes to the client's record: the client's editors (policy
        # choice, `may_write_chart_note`); the biller reads transcripts but may not.
        Case(
            row(EDIT_ALEX, refused(["bill"])),
            ids={"client_id": "alex", "message": "msg_client"},
            body=lambda _s, v: {"message_ids": [v["message"]]},
            writes="adds",
            visible_to=ACCESS["alex"],
        ),
    ),
    # -- the audit trail (RC1, issue 7) --------------------------------------------------
    # The account owner and practice managers view and export their own practice's
    # chain (owen: practice B's, nothing of A); other members may know the log exists:
    # 403; clients and contacts: the 404 of a route that does not exist.
    ("GET", "/audit"): (Case(row((*MANAGERS, "owen"), refused(others(*MANAGERS)))),),
    ("GET", "/audit.csv"): (Case(row((*MANAGERS, "owen"), refused(others(*MANAGERS)))),),
    # -- data exports (EX1, EX3; issue 7) ------------------------------------------------
    # The account owner and practice managers with export_client_data (priya); owen
    # for his own practice. Other members may know exports exist: 403, given before any
    # export is looked up (identical for a missing id); clients: 404 (PM7).
    ("POST", "/exports"): (
        Case(
            row((*EXPORTERS, "owen"), refused(others(*EXPORTERS))),
            body=lambda _s, _v: {"scope": "practice"},
            writes="adds",
        ),
    ),
    ("GET", "/exports"): (Case(row((*EXPORTERS, "owen"), refused(others(*EXPORTERS)))),),
    ("GET", "/exports/{export_id}"): (
        Case(
            row(EXPORTERS, refused(others(*EXPORTERS))),
            ids={"export_id": "export"},
            visible_to=frozenset(EXPORTERS),
        ),
    ),
    ("GET", "/exports/{export_id}/download"): (
        Case(
            row(EXPORTERS, refused(others(*EXPORTERS))),
            ids={"export_id": "export"},
            visible_to=frozenset(EXPORTERS),
        ),
    ),
    ("DELETE", "/exports/{export_id}"): (
        Case(
            row(EXPORTERS, refused(others(*EXPORTERS))),
            ids={"export_id": "export"},
            writes="changes",
            visible_to=frozenset(EXPORTERS),
        ),
    ),
    # -- announcements (AN1, plus plan; issue 7) -----------------------------------------
    # To all active clients: the account owner and practice managers. To "my clients":
    # a clinician's own (primary) active clients; anyone allowed with no such client
    # gets 422 no_recipients. Others: 403; clients and contacts: 404 (PM7).
    ("POST", "/announcements"): (
        Case(
            row((*MANAGERS, "owen"), refused(others(*MANAGERS))),
            body=lambda _s, _v: {"audience": "all_clients", "text": "Closed on Monday."},
            label="all",
            writes="adds",
        ),
        Case(
            {
                **row(("carl", "betty"), refused(["gus", "bill", "sally"])),
                **{
                    a: "422:no_recipients"
                    for a in ("olivia", "priya", "pete", "fiona", "sam", "dora", "owen")
                },
            },
            body=lambda _s, _v: {"audience": "my_clients", "text": "Back next week."},
            label="mine",
            writes="adds",
        ),
    ),
    # Everyone signed in: clients see what they received, the team what was sent.
    ("GET", "/announcements"): (Case(row(SIGNED_IN)),),
    # -- sign-in: second factor, sessions, security settings (issue 5) ------------------
    # The second step needs the pending step's cookie, which nobody here has: 401.
    ("POST", "/auth/login/second-factor"): (
        Case({a: "401" for a in ACTORS}, body=lambda _s, _v: {"code": "000000"}, writes="adds"),
    ),
    ("POST", "/auth/logout-everywhere"): (
        # Ends the caller's other sessions too: a fresh world for each success.
        Case(row(SIGNED_IN), writes="changes", own_credentials=True),
    ),
    # The second factor is the acting member's own; clients and contacts have none.
    ("GET", "/me/second-factor"): (Case(row((*STAFF_A, "owen"))),),
    ("POST", "/me/second-factor/enrollment"): (Case(row((*STAFF_A, "owen")), writes="adds"),),
    ("POST", "/me/second-factor/confirm"): (
        Case(
            row() | {a: "422:second_factor_code_invalid" for a in (*STAFF_A, "owen")},
            body=lambda _s, _v: {"code": "000000"},
            writes="adds",
        ),
    ),
    ("POST", "/me/second-factor/disable"): (
        Case(
            row() | {a: "409:second_factor_not_enrolled" for a in (*STAFF_A, "owen")},
            body=lambda _s, _v: {"password": PASSWORD, "code": "000000"},
            writes="adds",
        ),
    ),
    ("POST", "/me/second-factor/recovery-codes"): (
        Case(
            row() | {a: "409:second_factor_not_enrolled" for a in (*STAFF_A, "owen")},
            body=lambda _s, _v: {"password": PASSWORD, "code": "000000"},
            writes="adds",
        ),
    ),
    ("GET", "/practice/security"): (Case(row((*STAFF_A, "owen"))),),
    ("PATCH", "/practice/security"): (
        # PA5's idle timeout: whoever changes practice settings (as /practice/messaging).
        Case(
            row((*MANAGERS, "owen"), refused(others(*MANAGERS))),
            body=lambda _s, _v: {"session_idle_minutes": 20},
            writes="changes",
        ),
    ),
    ("POST", "/members/{member_id}/end-sessions"): (
        # PA5: the account owner only; refused before the lookup, so a missing id gets
        # the same 403. The other practice's owner: no such member (404).
        Case(
            row(["olivia"], refused(others("olivia"))),
            ids={"member_id": "carl"},
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    ("POST", "/members/{member_id}/second-factor/reset"): (
        # PA4 recovery: the account owner and practice managers (refused before the
        # lookup for everyone else); carl has no second factor here: 409 (the success
        # is tested in test_security_pages.py).
        Case(
            row((), refused(others(*MANAGERS)))
            | {m: "409:second_factor_not_enrolled" for m in MANAGERS},
            ids={"member_id": "carl"},
            writes="changes",
            visible_to=ANY_MEMBER_A,
        ),
    ),
    # OIDC (PA3) is not configured in this matrix's app: the routes do not exist (404);
    # linking needs a signed-in person first. tests/integration/test_oidc_signin.py
    # covers them configured, against a local provider.
    ("GET", "/auth/oidc/provider"): (Case(dict.fromkeys(ACTORS, "ok")),),
    ("GET", "/auth/oidc/start"): (Case(dict.fromkeys(ACTORS, "404")),),
    ("GET", "/auth/oidc/callback"): (Case(dict.fromkeys(ACTORS, "404")),),
    ("POST", "/auth/oidc/link"): (Case(row(), writes="adds"),),
    # -- Web Push (NT4): everyone signed in, for themselves --------------------------------
    ("GET", "/push/vapid-public-key"): (Case(dict.fromkeys(ACTORS, "ok")),),
    ("POST", "/push/subscriptions"): (
        Case(row(SIGNED_IN), body=lambda _s, _v: _push_subscription(), writes="adds"),
    ),
    ("DELETE", "/push/subscriptions/{subscription_id}"): (
        # A subscription is its owner's: for anyone else it does not exist.
        Case(
            row(["carl"]),
            ids={"subscription_id": "push_sub"},
            writes="changes",
            visible_to=frozenset({"carl"}),
        ),
    ),
    ("GET", "/push/preferences"): (Case(row(SIGNED_IN)),),
    ("PUT", "/push/preferences"): (
        Case(row(SIGNED_IN), body=lambda _s, _v: {"new_message": True}, writes="adds"),
    ),
    ("GET", "/unread"): (Case(row(SIGNED_IN)),),
    ("GET", "/recipients"): (Case(row(SIGNED_IN)),),
    ("POST", "/recipients/search"): (Case(row(SIGNED_IN), body=lambda _s, _v: {"q": "Te"}),),
    ("POST", "/emoji/search"): (Case(row(SIGNED_IN), body=lambda _s, _v: {"prefix": "gr"}),),
    # -- notifications and emailed links (NT1, NT3, PA2; branch `mail`) ---------------------
    # NT1: every member of the practice sees the setting; settings editors change it.
    ("GET", "/practice/notifications"): (Case(row((*STAFF_A, "owen"))),),
    ("PUT", "/practice/notifications"): (
        Case(
            row((*MANAGERS, "owen"), refused(others(*MANAGERS))),
            body=lambda _s, _v: {"name_practice": True},
            writes="changes",
        ),
    ),
    # NT3: each member's own "email me about new secure messages".
    ("GET", "/me/notifications"): (Case(row((*STAFF_A, "owen"))),),
    ("PUT", "/me/notifications"): (
        Case(
            row((*STAFF_A, "owen")),
            body=lambda _s, _v: {"email_new_messages": False},
            writes="adds",
        ),
    ),
    # PA2 and password reset: public, and the same answer for everyone.
    ("POST", "/auth/instant-sign-in"): (
        Case(
            row(public=True, ok=ACTORS),
            body=lambda s, _v: {"email": f"alex.{s.canary}@example.test"},
            writes="adds",
        ),
    ),
    ("POST", "/auth/password-reset"): (
        Case(
            row(public=True, ok=ACTORS),
            body=lambda s, _v: {"email": s.world.emails["carl"]},
            writes="adds",
        ),
    ),
}

# Where the code's answer contradicts SPEC: the matrix keeps SPEC's expectation and the
# cell is a strict xfail, so a fix turns it into a failure until the entry is removed.
# (method, path, label, actor) -> why. Empty: the bugs this matrix found are fixed.
BUGS: dict[tuple[str, str, str, str], str] = {}


# --- the scene: a world, its target objects and signed-in credentials ---------------------


@dataclass
class Scene:
    world: World
    http: TestClient
    canary: str
    targets: dict[str, int]
    _headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def value(self, target: str) -> int:
        return self.targets[target] if target in self.targets else self.world.id(target)

    def headers(self, actor: str, *, fresh: bool = False) -> dict[str, str]:
        if actor == "anonymous":
            return {}
        if actor == "alex_link":  # a session from a portal link to conv_client
            if fresh or actor not in self._headers:
                made = link_sign_in(self.world, self.targets["conv_client"])
                if fresh:
                    return made
                self._headers[actor] = made
            return self._headers[actor]
        if actor == "ivy":  # deactivated: no new credentials, only her old token
            return self._headers[actor]
        if fresh or actor not in self._headers:
            made = sign_in(self.world, actor)
            if fresh:
                return made
            self._headers[actor] = made
        return self._headers[actor]

    def call(
        self, method: str, path: str, actor: str, body: dict[str, Any] | None, **kw: bool
    ) -> Response:
        # No cookie set by one answer (login, logout) reaches the next request.
        self.http.cookies.clear()
        return self.http.request(method, path, headers=self.headers(actor, **kw), json=body)


def link_sign_in(world: World, conversation_id: int) -> dict[str, str]:
    """alex's session from a notification's portal link (PA1): the link is issued and
    redeemed through the services, as the landing page's POST does."""
    with unit_of_work(world.runtime.db) as uow:
        link = issue_link(
            uow,
            world.practice_a,
            Purpose.PORTAL,
            world.parties["alex"],
            ttl=timedelta(hours=24),
            conversation_id=conversation_id,
        )
        uow.commit()
    with unit_of_work(world.runtime.db) as uow:
        done = email_links.redeem_portal_link(uow, link.token, ip=None)
    cookie = session_cookie_name(world.runtime)
    return {"Cookie": f"{cookie}={done.session_id}", "Origin": ORIGIN}


def sign_in(world: World, name: str) -> dict[str, str]:
    """Members use a personal API token, client-side actors a portal session cookie
    (from the same origin, as a browser would send it)."""
    actor = world.actor(name)
    with unit_of_work(world.runtime.db) as uow:
        if actor.party.kind is PartyKind.MEMBER:
            _id, token = sessions.create_api_token(uow, actor, name="authz matrix")
            return {"Authorization": f"Bearer {token}"}
        session_id = sessions.start_session(
            uow, Actor(actor.practice_id, actor.party, Via.MAGIC_LINK)
        )
    cookie = session_cookie_name(world.runtime)
    return {"Cookie": f"{cookie}={session_id}", "Origin": ORIGIN}


def make_scene(world: World, http: TestClient) -> Scene:
    """Practice A's target objects: a conversation carl <-> alex (started by carl), a
    team conversation carl <-> dora started while dora's EN2 box was on (then switched
    off), and one of carl's API tokens. Message texts carry a canary. Also ivy, a
    clinician removed (deactivated) after she made an API token."""
    canary = f"PHICANARY-{uuid.uuid4().hex}"
    db, owner = world.runtime.db, world.actor("olivia")
    with unit_of_work(db) as uow:
        ivy = team.add_member(
            uow,
            owner,
            world.runtime.passwords,
            name="Ivy Inactive",
            email=f"ivy.{uuid.uuid4().hex}@maple.test",
            roles=[Role.CLINICIAN],
            access_level=AccessLevel.BASIC,
        )
    world.parties["ivy"], world.practice_of["ivy"] = ivy.party, world.practice_a
    ivy_headers = sign_in(world, "ivy")
    with unit_of_work(db) as uow:
        team.update_member(uow, owner, ivy.id, active=False)
    client_conv = start(world, "carl", client="alex", text=f"{canary} for alex")
    with unit_of_work(db) as uow:
        team.set_member_messaging(uow, owner, world.id("dora"), enabled=True)
    team_conv = start(world, "carl", members=("dora",), text=f"{canary} for dora")
    with unit_of_work(db) as uow:
        team.set_member_messaging(uow, owner, world.id("dora"), enabled=False)
    with unit_of_work(db) as uow:
        token_id, _token = sessions.create_api_token(uow, world.actor("carl"), name="target")
    export_id = ready_export(world)  # data exports (issue 7)
    sub = _push_subscription()
    with unit_of_work(db) as uow:
        push_sub = push.subscribe(
            uow,
            world.actor("carl"),
            endpoint=sub["endpoint"],
            p256dh=sub["keys"]["p256dh"],
            auth=sub["keys"]["auth"],
            allow_local=False,
        )
    targets = {
        "export": export_id,
        "conv_client": client_conv.conversation.id,
        "msg_client": client_conv.message.id,
        "conv_team": team_conv.conversation.id,
        "msg_team": team_conv.message.id,
        "token": token_id,
        "push_sub": push_sub,
    }
    return Scene(world, http, canary, targets, {"ivy": ivy_headers})


def ready_export(world: World) -> int:
    """Data exports (issue 7): a ready export of practice A, made by its owner. The
    app's own export runner (running in the module's client) may take it first."""
    db, export_dir = world.runtime.db, world.runtime.settings.resolved_export_dir
    with unit_of_work(db) as uow:
        made = export_service.request_export(
            uow, world.actor("olivia"), scope=ExportScope.PRACTICE, password_protected=True
        )
    export_id = made.export.id
    export_jobs.run_next_export(db, export_dir=export_dir, only=export_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with unit_of_work(db, write=False) as uow:
            if uow.exports.get_export(world.practice_a, export_id).status is ExportStatus.READY:
                return export_id
        time.sleep(0.05)
    raise AssertionError("the scene's export did not become ready")


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture(scope="module")
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def read_scene(runtime: Runtime, http: TestClient) -> Scene:
    return make_scene(build_world(runtime), http)


@pytest.fixture(scope="module")
def write_scene(runtime: Runtime, http: TestClient) -> Scene:
    return make_scene(build_world(runtime), http)


# --- checks ------------------------------------------------------------------------------

# Anything of practice A; none of it may reach an actor of practice B.
PRACTICE_A_TEXTS = (
    "Maple Street",
    "@maple.",
    "Olivia Owens",
    "Pat Parent",
    "Ivy Inactive",
    *(f"{n.title()} Test" for n in MEMBERS_A),
    *(f"{n.title()} Client" for n in ("alex", "jordan", "casey", "nora")),
)


def api_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every JSON API route, from `app.routes`.

    FastAPI >= 0.137 keeps included routers as lazy `_IncludedRouter` nodes in
    `app.routes`; `fastapi.routing.iter_route_contexts` (0.137.2+) flattens them with
    their prefixes. Older versions hold the APIRoute objects directly.
    """
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    if flatten is None:
        pairs: Iterator[tuple[Any, str]] = (
            (r, r.path) for r in app.routes if isinstance(r, APIRoute)
        )
    else:
        pairs = ((c.original_route, c.path) for c in flatten(app.routes))
    found = set()
    for route, path in pairs:
        if isinstance(route, APIRoute) and path.startswith(f"{API_PREFIX}/"):
            found.update((m, path.removeprefix(API_PREFIX)) for m in route.methods)
    return found


def error_of(response: Response) -> dict[str, str]:
    """Every error body is exactly {"error": {"code": str, "message": str}}."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str), body
    assert isinstance(body["error"]["message"], str), body
    return body["error"]


def build(scene: Scene, template: str, case: Case, *, missing: bool) -> tuple[str, Any]:
    values = {k: MISSING if missing else scene.value(t) for k, t in case.ids.items()}
    path = f"{API_PREFIX}{template.format(**values)}"
    if case.query:
        path = f"{path}?{case.query}"
    return path, case.body(scene, values) if case.body else None


def assert_outcome(response: Response, outcome: str) -> None:
    if outcome == "ok":
        assert 200 <= response.status_code < 300, response.text
        return
    status, _, code = outcome.partition(":")
    assert response.status_code == int(status), response.text
    error = error_of(response)
    if status == "401":
        assert error["code"] == "not_authenticated"
    elif status == "404":
        assert error["code"] == "not_found"
    elif code:
        assert error["code"] == code


def _params() -> Iterator[Any]:
    for (method, path), cases in MATRIX.items():
        for case in cases:
            for actor in ACTORS:
                label = f" [{case.label}]" if case.label else ""
                bug = BUGS.get((method, path, case.label, actor))
                marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
                yield pytest.param(
                    method,
                    path,
                    case,
                    actor,
                    id=f"{method} {path}{label} as {actor}",
                    marks=marks,
                )


# --- the tests -----------------------------------------------------------------------------


def test_pm7_matrix_lists_every_api_route(app: FastAPI):
    routes = api_routes(app)
    assert len(routes) >= 20, routes  # the derivation itself works
    assert set(MATRIX) == routes, {
        "routes without a matrix entry": sorted(routes - set(MATRIX)),
        "matrix entries without a route": sorted(set(MATRIX) - routes),
    }


def test_pm7_matrix_rows_name_every_actor():
    for key, cases in MATRIX.items():
        for case in cases:
            assert set(case.expect) == set(ACTORS), key
            assert all(
                re.fullmatch(r"ok|401|404|(403|409|422):[a-z_]+", o) for o in case.expect.values()
            )
            assert case.writes in ("read", "adds", "changes"), key
            # A search is a POST (its term stays out of the URL) that changes nothing.
            reads = key[0] == "GET" or key[1].endswith("/search")
            assert (case.writes == "read") == reads, key
            placeholders = set(re.findall(r"{(\w+)}", key[1]))
            assert placeholders <= set(case.ids), key
            assert not case.ids or case.visible_to, key


@pytest.mark.parametrize(("method", "path", "case", "actor"), list(_params()))
def test_pm7_route_answers_each_actor_as_the_matrix_says(
    method: str, path: str, case: Case, actor: str, request: pytest.FixtureRequest
):
    outcome = case.expect[actor]
    bug = (method, path, case.label, actor) in BUGS
    if case.writes == "changes" and (outcome == "ok" or bug):
        scene = make_scene(request.getfixturevalue("world"), request.getfixturevalue("http"))
    else:
        scene = request.getfixturevalue("write_scene" if method != "GET" else "read_scene")

    url, body = build(scene, path, case, missing=False)
    response = scene.call(method, url, actor, body, fresh=case.own_credentials)
    assert_outcome(response, outcome)

    if actor in OTHER_PRACTICE:
        leaked = [t for t in (*PRACTICE_A_TEXTS, scene.canary) if t in response.text]
        assert not leaked, (leaked, response.text)
    if outcome == "ok":
        return
    assert scene.canary not in response.text

    # PM7: missing and forbidden look the same. Every 404, and any refusal about objects
    # the actor may not know exist, equals the answer for ids that do not exist (for a
    # route without ids: the answer of a path that does not exist). A 401 comes before
    # any lookup, so it does not tell whether the ids exist either.
    unseen = bool(case.ids) and actor not in case.visible_to
    refusal_about_ids = outcome == "401" or (outcome.startswith("403") and unseen)
    if outcome == "404" or (case.ids and refusal_about_ids):
        if case.ids:
            ref_url, ref_body = build(scene, path, case, missing=True)
        else:
            ref_url, ref_body = f"{API_PREFIX}/no-such-route-{uuid.uuid4().hex}", body
        reference = scene.call(method, ref_url, actor, ref_body, fresh=case.own_credentials)
        assert reference.status_code == response.status_code, reference.text
        assert reference.json() == response.json()


@pytest.mark.parametrize("actor", (*STAFF_A, "owen"))
def test_pm2_pm3_client_profiles_follow_access_to_a_client(actor: str, read_scene: Scene):
    """SPEC "Access to a client", for every client of practice A: the client list and
    each profile agree with the access rules; no access answers like a missing id."""
    world = read_scene.world
    expected = {c for c, who in ACCESS.items() if actor in who}
    names = {world.id(c): c for c in ACCESS}
    listed = read_scene.call("GET", f"{API_PREFIX}/clients", actor, None)
    assert listed.status_code == 200, listed.text
    assert {names[c["id"]] for c in listed.json() if c["id"] in names} == expected
    missing = read_scene.call("GET", f"{API_PREFIX}/clients/{MISSING}", actor, None)
    for client in ACCESS:
        r = read_scene.call("GET", f"{API_PREFIX}/clients/{world.id(client)}", actor, None)
        if client in expected:
            assert r.status_code == 200, (client, r.text)
        else:
            assert (r.status_code, r.json()) == (404, missing.json()), client


def test_pm7_team_managers_send_roles_as_json(write_scene: Scene):
    """The owner adds a team member and changes a member's roles: the JSON API must take
    roles and access levels as the strings its OpenAPI schema documents."""
    added = write_scene.call(
        "POST",
        f"{API_PREFIX}/members",
        "olivia",
        {"name": "Nia New", "email": f"nia.{uuid.uuid4().hex}@maple.test", "roles": ["biller"]},
    )
    assert added.status_code == 201, added.text
    changed = write_scene.call(
        "PATCH",
        f"{API_PREFIX}/members/{added.json()['id']}",
        "olivia",
        {"roles": ["clinician"], "access_level": "basic"},
    )
    assert changed.status_code == 200, changed.text


def test_en2_member_with_messaging_off_is_not_listed_conversations_she_cannot_open(
    read_scene: Scene,
):
    opened = read_scene.call(
        "GET", f"{API_PREFIX}/conversations/{read_scene.targets['conv_team']}", "dora", None
    )
    assert opened.status_code == 404  # EN2: she does not receive
    listed = read_scene.call("GET", f"{API_PREFIX}/conversations", "dora", None)
    assert listed.status_code == 200, listed.text
    ids = {c["id"] for c in listed.json()["conversations"]}
    assert read_scene.targets["conv_team"] not in ids


def test_en2_ms7_member_with_messaging_off_has_no_unread_she_cannot_open(read_scene: Scene):
    carl = read_scene.call("GET", f"{API_PREFIX}/unread", "carl", None)
    assert carl.status_code == 200, carl.text
    dora = read_scene.call("GET", f"{API_PREFIX}/unread", "dora", None)
    assert dora.json() == {"unread": 0}
