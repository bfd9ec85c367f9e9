"""Architecture rules that keep the layers honest (STYLE habits 6 and 7)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "confide"
SQL_METHODS = {"execute", "exec_driver_sql", "scalars", "scalar"}

# Repo methods that are not about one practice's data, and why.
UNSCOPED = {
    "find_login": "sign-in looks the email up across practices (emails are unique)",
    "find_live_session": "a session is found by its hash before the practice is known",
    "find_live_sessions": "the hub checks its sockets' sessions by hash, across practices",
    "touch_session": "keyed by the session's hash",
    "end_session": "keyed by the session's hash",
    "find_api_token": "a token is found by its hash before the practice is known",
    "insert_practice": "creates the practice",
    "forget": "drops the unit of work's identity map of rows read; no query",
    "remember_member": "keeps a member row read with their API token (its practice inside)",
    "list_practice_ids": "operator tooling",
    # issue 5: the pending sign-in step and the sign-in lockout
    "find_challenge": "the pending sign-in step is found by its hash before the practice is known",
    "count_challenge_attempt": "keyed by the pending step's hash",
    "use_challenge": "keyed by the pending step's hash",
    "record_failure": "sign-in failures are counted by email hash and address, across practices",
    "list_failures": "sign-in failures are counted by email hash and address, across practices",
    "clear_failures": "sign-in failures are counted by email hash and address, across practices",
    "prune_failures": "housekeeping of the sign-in failure counters",
    # issue 5: OIDC sign-in, before anyone (or any practice) is known
    "insert_request": (
        "a started OIDC sign-in is keyed by the hash of the browser's secret; emailed-link "
        "requests are counted per address and IP, not per practice"
    ),
    "use_request": "keyed by the hash of the browser's secret",
    "find_identity": "an OIDC account is found by (issuer, subject) across practices",
    "find_client_side_by_email": (
        "the first OIDC sign-in and instant sign-in find their person by address, across practices"
    ),
    # NT4: the push consumer's position in the event log (all practices)
    "lease_cursor": "the push consumer reads the event log of every practice",
    "release_cursor": "the push consumer reads the event log of every practice",
    "peek_cursor": "the push consumer reads the event log of every practice",
    "advance_free_cursor": "the push consumer reads the event log of every practice",
    # Email links (branch `mail`): found by a token's or session's hash, or by address,
    # before the practice is known.
    "find_link": "a link is found by its token's hash before the practice is known",
    "use_link": "a link is redeemed by its token's hash before the practice is known",
    "find_link_session": "a link session is found by the session's hash",
    "count_requests_since": "link requests are counted per address and IP, not per practice",
    "prune_requests": "old link requests of every practice are forgotten together",
}


def _sql_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            if node.module != "sqlalchemy.exc":  # catching IntegrityError is allowed
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("sqlalchemy")]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_METHODS
        ):
            found.append(f".{node.func.attr}()")
    return found


def test_no_sql_outside_the_store():
    """Routes, services, auth and the domain never write SQL: they call repos
    (STYLE habit 7; import-linter keeps the domain free of SQLAlchemy altogether)."""
    offenders = []
    for layer in ("web", "services", "domain", "auth"):
        for path in (SRC / layer).rglob("*.py"):
            found = _sql_uses(ast.parse(path.read_text()))
            if found:
                offenders.append(f"{path.relative_to(SRC)}: {found}")
    assert offenders == []


def test_every_repo_query_is_scoped_to_a_practice():
    """Each public repo method takes practice_id first (STYLE habit 6), or is listed in
    UNSCOPED with the reason."""
    offenders = []
    for path in (SRC / "store" / "repos").glob("*.py"):
        for cls in ast.parse(path.read_text()).body:
            if not isinstance(cls, ast.ClassDef) or not cls.name.endswith("Repo"):
                continue
            for fn in cls.body:
                if not isinstance(fn, ast.FunctionDef) or fn.name.startswith("_"):
                    continue
                args = [a.arg for a in fn.args.args[1:]]
                if fn.name not in UNSCOPED and (not args or args[0] != "practice_id"):
                    offenders.append(f"{path.name}:{cls.name}.{fn.name}({', '.join(args)})")
    assert offenders == []


def test_practice_id_is_in_every_conversation_and_message_query():
    """Each select/update on conversations, participants or messages in the repos
    names practice_id in the same statement (Zulip's limit-message-filter idea)."""
    source = (SRC / "store" / "repos" / "conversations.py").read_text()
    tree = ast.parse(source)
    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("select", "update"):
            parent_src = ast.get_source_segment(source, node) or ""
            stmt = _enclosing_statement(tree, node)
            text = ast.get_source_segment(source, stmt) or parent_src
            tables = ("ConversationRow", "MessageRow", "ParticipantRow")
            if any(t in parent_src for t in tables) and "practice_id" not in text:
                offenders.append(f"line {node.lineno}: {parent_src[:60]}")
    assert offenders == []


def _enclosing_statement(tree: ast.AST, target: ast.AST) -> ast.AST:
    best: ast.AST = target
    for node in ast.walk(tree):
        scope = isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        if isinstance(node, ast.stmt) and not scope and any(n is target for n in ast.walk(node)):
            best = node
    return best
