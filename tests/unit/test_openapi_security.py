"""T02 (issue 8): the OpenAPI description declares how the API authenticates
(web/openapi.py): an API token or the session cookie, required everywhere but on the
operations that answer without credentials. (That the server holds to it:
tests/integration/test_api_fuzz.py, schemathesis' `ignored_auth`.)"""

from pathlib import Path
from typing import Any

import pytest

from confide.runtime import build_runtime
from confide.web.app import API_PREFIX, create_app
from confide.web.openapi import BEARER, COOKIE, PUBLIC_OPERATIONS, with_security
from tests.conftest import make_settings


def _description(tmp_path: Path, *, secure_cookies: bool) -> dict[str, Any]:
    settings = make_settings(tmp_path, database_url="", secure_cookies=secure_cookies)
    rt = build_runtime(settings, run_migrations=False)
    try:
        return create_app(rt).openapi()
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("secure_cookies", "cookie"),
    [(True, "__Host-confide_session"), (False, "confide_session")],
)
def test_t02_the_description_declares_the_token_and_the_cookie_this_server_uses(
    tmp_path: Path, secure_cookies: bool, cookie: str
) -> None:
    described = _description(tmp_path, secure_cookies=secure_cookies)
    schemes = described["components"]["securitySchemes"]
    assert schemes[BEARER] | {"description": ""} == {
        "type": "http",
        "scheme": "bearer",
        "description": "",
    }
    assert (schemes[COOKIE]["type"], schemes[COOKIE]["in"]) == ("apiKey", "cookie")
    assert schemes[COOKIE]["name"] == cookie
    assert described["security"] == [{BEARER: []}, {COOKIE: []}]
    public = {
        (method, path.removeprefix(API_PREFIX))
        for path, operations in described["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    }
    assert public == PUBLIC_OPERATIONS
    secured = [
        op for ops in described["paths"].values() for op in ops.values() if "security" not in op
    ]
    assert len(secured) > 50


def test_t02_a_public_operation_missing_from_the_api_is_refused(tmp_path: Path) -> None:
    described = _description(tmp_path, secure_cookies=True)
    del described["paths"][f"{API_PREFIX}/push/vapid-public-key"]
    with pytest.raises(LookupError, match="GET /push/vapid-public-key"):
        with_security(described, API_PREFIX, "__Host-confide_session")
