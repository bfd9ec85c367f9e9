"""Search terms never travel in a URL (docs/security.md, "Search terms stay out of URLs").

What someone types to find a client is often a client's name; a URL reaches access
logs, proxies and browser history. So every search is a POST with the term in the body
(`POST /api/v1/clients/search`, `/recipients/search`, `/emoji/search`; the pages'
`POST /clients/search`, `/messages/new/search`), and:

- no route of the app has a query parameter named like a search term: walked from
  `app.routes` (pages included) and from the OpenAPI description;
- no page has a GET form (a GET form puts whatever is typed in the URL);
- a request that sends such a parameter anyway is refused (400 `search_in_url`), on the
  API, the pages and static files alike;
- a real access log (nginx in front of `confide serve`, logging every request line in
  the default `combined` format, query strings included) holds none of the terms
  searched for, while a refused `?q=` shows that the log would have caught one.
"""

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.websockets import WebSocketDisconnect

from confide.demo import DEMO_PASSWORD
from confide.runtime import Runtime
from confide.web.app import create_app
from confide.web.middleware import SEARCH_PARAMS
from tests.integration.test_serve import free_port, serve, stop

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "src" / "confide" / "web" / "templates"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _query_params(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_params(sub)
    return names


def _routes(app: FastAPI) -> list[tuple[APIRoute, str]]:
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    if flatten is None:
        return [(r, r.path) for r in app.routes if isinstance(r, APIRoute)]
    return [
        (c.original_route, c.path)
        for c in flatten(app.routes)
        if isinstance(c.original_route, APIRoute)
    ]


@pytest.fixture(scope="module")
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


def test_no_route_takes_a_search_term_as_a_query_parameter(app: FastAPI):
    routes = _routes(app)
    assert len(routes) > 50, len(routes)  # the walk really sees the app (pages included)
    every = {(path, name) for route, path in routes for name in _query_params(route.dependant)}
    # The walk finds query parameters where there are some (the check could fail).
    assert ("/api/v1/conversations/{conversation_id}", "before_seq") in every
    assert ("/messages/{conversation_id}/older", "before") in every
    offending = sorted((p, n) for p, n in every if n.lower() in SEARCH_PARAMS)
    assert not offending, offending


def test_openapi_description_has_no_search_query_parameter(app: FastAPI):
    spec: dict[str, Any] = app.openapi()
    seen: set[tuple[str, str, str]] = set()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                if param["in"] == "query":
                    seen.add((method.upper(), path, param["name"]))
    assert ("GET", "/api/v1/audit", "action") in seen, seen  # the check can see them
    offending = sorted(s for s in seen if s[2].lower() in SEARCH_PARAMS)
    assert not offending, offending
    # The searches are POSTs whose JSON body holds the term.
    for path in ("/api/v1/clients/search", "/api/v1/recipients/search", "/api/v1/emoji/search"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert "$ref" in body["schema"], (path, body)


def test_no_page_has_a_get_form():
    forms = [
        (t.name, m.group(0))
        for t in sorted(TEMPLATES.rglob("*.html"))
        for m in re.finditer(r"<form\b[^>]*>", t.read_text())
    ]
    assert len(forms) > 10, forms
    # A GET form puts what is typed in the URL: allowed only when nothing typed can be a
    # name (checkboxes, selects, dates, and text fields whose `pattern` admits ids and
    # action names only: the browser will not submit anything else).
    free_text = re.compile(
        r"<textarea\b|<input\b(?![^>]*\btype=[\"']?(?:checkbox|radio|hidden|date|submit|number))"
        r"(?![^>]*\bpattern=[\"'][^\"' ]*[\"'])[^>]*>",
        re.I,
    )
    gets = [
        (t.name, m.group(0))
        for t in sorted(TEMPLATES.rglob("*.html"))
        for m in re.finditer(
            r"<form\b[^>]*method=[\"']?get[^>]*>.*?</form>", t.read_text(), re.I | re.S
        )
        if free_text.search(m.group(0))
    ]
    assert not gets, gets
    hx_get_inputs = [
        t.name
        for t in TEMPLATES.rglob("*.html")
        if re.search(r"<input\b[^>]*\bhx-get=", t.read_text(), re.I)
    ]
    assert not hx_get_inputs, hx_get_inputs


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/clients?q=Alex",
        "/api/v1/recipients?limit=5&q=",
        "/api/v1/clients?Query=Alex",
        "/clients?q=Alex",
        "/messages/new?q=Alex",
        "/messages/new?to=client:1&search=Alex",
        "/static/app.css?term=x",
        "/api/v1/emoji?prefix=:gr",
    ],
)
def test_a_search_parameter_in_the_url_is_refused(world: Any, url: str):
    r = world.api("olivia").get(url)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "search_in_url"


def test_a_search_parameter_on_the_socket_url_is_refused(world: Any):
    """The socket's own fast path (web/app.py) leaves URLs with a query string to the
    full stack, which refuses a search term there too."""
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        world.api("olivia").websocket_connect("/api/v1/ws?q=Alex"),
    ):
        pass
    assert refused.value.code == 1008


def test_searches_in_the_body_work(world: Any):
    olivia = world.api("olivia")
    found = olivia.post("/api/v1/clients/search", json={"q": "alex"}).json()
    assert [c["name"] for c in found] == ["Alex Client"]
    assert len(olivia.get("/api/v1/clients").json()) > 1  # the plain listing, unfiltered
    r = world.api("carl").post("/api/v1/recipients/search", json={"q": "sal"}).json()
    assert [m["id"] for m in r["members"]] == [world.id("sally")]
    r = world.api("carl").post("/api/v1/emoji/search", json={"prefix": ":thumbsu"})
    assert r.json()["suggestions"][0]["code"] == ":thumbsup:"


# --- a real access log ---------------------------------------------------------------------


def _nginx(tmp: Path, port: int, upstream: int) -> subprocess.Popen[bytes]:
    """nginx in front of the server, logging every request line (`combined`: method,
    path and query string), as an operator who turns the access log on would."""
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {tmp}/logs/access.log combined;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX or "nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "logs" / "nginx.out").open("ab"),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError((tmp / "logs" / "error.log").read_text())


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    app_port, front_port = free_port(), free_port()
    (tmp_path / "data").mkdir()
    app = serve(tmp_path / "data", app_port)
    nginx = None
    try:
        nginx = _nginx(tmp_path / "nginx", front_port, app_port)
        yield f"http://127.0.0.1:{front_port}", tmp_path / "nginx" / "logs" / "access.log"
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)  # graceful: the log is complete
            try:
                nginx.wait(timeout=15)
            except subprocess.TimeoutExpired:
                nginx.kill()
        stop(app)


def _signed_in(base: str, email: str) -> httpx.Client:
    client = httpx.Client(base_url=base, headers={"Origin": base})
    r = client.post("/api/v1/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert r.status_code == 204, r.text
    return client


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
@pytest.mark.skipif(
    os.environ.get("CONFIDE_TEST_DATABASE") == "postgres", reason="embedded default only"
)
def test_access_log_of_searches_holds_no_term(proxied: tuple[str, Path]):
    base, access_log = proxied
    terms = {k: f"Term{k}{secrets.token_hex(5)}" for k in ("api", "recip", "emoji", "page", "new")}
    olivia = _signed_in(base, "olivia@maple.test")
    carl = _signed_in(base, "carl@maple.test")
    r = olivia.post("/api/v1/clients/search", json={"q": terms["api"]})
    assert (r.status_code, r.json()) == (200, [])
    r = carl.post("/api/v1/recipients/search", json={"q": terms["recip"]})
    assert r.status_code == 200, r.text
    r = carl.post("/api/v1/emoji/search", json={"prefix": ":" + terms["emoji"][:30]})
    assert r.status_code == 200, r.text
    # The pages' searches, as htmx sends them: a form body and the CSRF header.
    page = carl.get("/clients")
    token = re.search(r"X-CSRF-Token&#34;: &#34;([0-9a-f]+)", page.text) or re.search(
        r'"X-CSRF-Token": "([0-9a-f]+)"', page.text
    )
    assert token, page.text[:2000]
    htmx = {"HX-Request": "true", "X-CSRF-Token": token.group(1)}
    r = carl.post("/clients/search", data={"q": terms["page"]}, headers=htmx)
    assert r.status_code == 200 and "No clients found" in r.text, r.text
    r = carl.post("/messages/new/search", data={"q": terms["new"]}, headers=htmx)
    assert r.status_code == 200 and "Nobody found" in r.text, r.text
    # The control: a search in the URL is refused, and the log does show query strings.
    control = f"Control{secrets.token_hex(5)}"
    assert olivia.get("/api/v1/clients", params={"q": control}).status_code == 400

    deadline = time.monotonic() + 5
    while control not in (log := access_log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = log.splitlines()
    assert any(control in line for line in lines), log  # the log would catch a term
    searches = [line for line in lines if "/search HTTP/1.1" in line]
    assert len(searches) == 5, log
    assert all('"POST ' in line and '" 200 ' in line for line in searches), searches
    leaked = [line for line in lines for t in terms.values() if t in line]
    assert not leaked, leaked
