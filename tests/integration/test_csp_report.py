"""The CSP report endpoint (web/csp_report.py): both report formats are taken, only the
directive and the blocked resource's scheme are logged (never a sample, URL or document),
bodies are bounded, other content types refused, and the log is rate-limited.

That a real browser's violation reaches it, and that rendering hostile text causes
none: tests/browser/test_xss_corpus.py."""

import json
import logging

import pytest
from starlette.testclient import TestClient

from confide.runtime import Runtime
from confide.web import csp_report
from confide.web.app import create_app

SECRET = "Robin Canary-3c9e"  # what a person wrote, in the sample and the URLs


@pytest.fixture(scope="module")
def http(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime), base_url="https://testserver")


@pytest.fixture(autouse=True)
def fresh_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csp_report, "_budget", csp_report._Budget())


def classic(directive: str = "script-src-elem", blocked: str = "inline") -> bytes:
    return json.dumps(
        {
            "csp-report": {
                "document-uri": f"https://testserver/messages/7?{SECRET}",
                "referrer": "",
                "violated-directive": directive,
                "effective-directive": directive,
                "original-policy": "default-src 'none'",
                "disposition": "enforce",
                "blocked-uri": blocked,
                "line-number": 12,
                "source-file": f"https://testserver/x/{SECRET}",
                "status-code": 200,
                "script-sample": f"alert('{SECRET}')",
            }
        }
    ).encode()


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "confide.csp"]


def test_every_response_names_the_report_endpoint(http: TestClient):
    for path in ("/signin", "/api/v1/unread", "/static/app.css", "/no-such-page"):
        r = http.get(path)
        csp = r.headers["content-security-policy"]
        assert "report-uri /csp-report" in csp, (path, csp)


def test_a_classic_report_logs_directive_and_scheme_only(
    http: TestClient, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, "confide.csp")
    r = http.post(
        "/csp-report", content=classic(), headers={"content-type": "application/csp-report"}
    )
    assert (r.status_code, r.content) == (204, b"")
    r = http.post(
        "/csp-report",
        content=classic("img-src", f"https://evil.example/{SECRET}.png"),
        headers={"content-type": "application/csp-report"},
    )
    assert r.status_code == 204
    assert lines(caplog) == [
        "csp violation: directive=script-src-elem blocked=inline",
        "csp violation: directive=img-src blocked=https",
    ]
    assert SECRET not in caplog.text and "evil.example" not in caplog.text


def test_a_reporting_api_batch_is_taken(http: TestClient, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, "confide.csp")
    batch = [
        {
            "type": "csp-violation",
            "age": 10,
            "url": f"https://testserver/portal/3?{SECRET}",
            "user_agent": "Chromium",
            "body": {
                "documentURL": f"https://testserver/portal/3?{SECRET}",
                "effectiveDirective": "script-src-attr",
                "blockedURL": "inline",
                "sample": SECRET,
                "disposition": "enforce",
            },
        },
        {"type": "deprecation", "body": {"id": "x", "message": SECRET}},
        {
            "type": "csp-violation",
            "body": {"effectiveDirective": "frame-src", "blockedURL": f"javascript:{SECRET}"},
        },
    ]
    r = http.post(
        "/csp-report",
        content=json.dumps(batch),
        headers={"content-type": "application/reports+json"},
    )
    assert r.status_code == 204
    assert lines(caplog) == [
        "csp violation: directive=script-src-attr blocked=inline",
        "csp violation: directive=frame-src blocked=javascript",
    ]
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"effective-directive": "script-src'; evil", "blocked-uri": "inline"}, "other inline"),
        ({"violated-directive": "style-src-elem 'self'", "blocked-uri": ""}, "style-src-elem none"),
        ({"effective-directive": "img-src", "blocked-uri": "data"}, "img-src data"),
        ({"effective-directive": "img-src", "blocked-uri": "somewhere"}, "img-src other"),
        ({"effective-directive": "img-src", "blocked-uri": "data:image/png;x"}, "img-src data"),
        ({"effective-directive": 5, "blocked-uri": ["x"]}, "other other"),
    ],
)
def test_odd_report_fields_are_reduced_to_safe_words(
    http: TestClient, caplog: pytest.LogCaptureFixture, report: dict[str, object], expected: str
):
    caplog.set_level(logging.WARNING, "confide.csp")
    r = http.post("/csp-report", json={"csp-report": report})
    assert r.status_code == 204
    directive, blocked = expected.split()
    assert lines(caplog) == [f"csp violation: directive={directive} blocked={blocked}"]


def test_bad_reports_are_refused_and_change_nothing(
    http: TestClient, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, "confide.csp")
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert http.post("/csp-report", content=b"a=1", headers=form).status_code == 415
    assert (
        http.post("/csp-report", content=b"x", headers={"content-type": "text/plain"}).status_code
        == 415
    )
    big = b'{"csp-report": {"script-sample": "' + b"x" * (csp_report.MAX_BODY + 10) + b'"}}'
    r = http.post("/csp-report", content=big, headers={"content-type": "application/csp-report"})
    assert r.status_code == 413
    chunks = iter([b'{"csp-report": {"x": "', b"y" * csp_report.MAX_BODY, b'"}}'])
    r = http.post(  # streamed, without Content-Length
        "/csp-report", content=chunks, headers={"content-type": "application/csp-report"}
    )
    assert r.status_code == 413
    r = http.post(
        "/csp-report", content=b"{nope", headers={"content-type": "application/csp-report"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (400, "malformed_report")
    r = http.post("/csp-report", json={"not": "a report"})
    assert r.status_code == 204
    assert lines(caplog) == []


def test_a_flood_of_reports_is_logged_at_most_sixty_a_minute(
    http: TestClient, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, "confide.csp")
    for _ in range(csp_report.MAX_PER_MINUTE + 25):
        r = http.post(
            "/csp-report", content=classic(), headers={"content-type": "application/csp-report"}
        )
        assert r.status_code == 204
    assert len(lines(caplog)) == csp_report.MAX_PER_MINUTE
