"""FastAPI's native OpenTelemetry is off (web/app.py): even with a tracer provider set up
in the process, Confide's requests make no spans (their paths hold record ids)."""

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace

from tests.personas import World


class RecordingTracer(trace.NoOpTracer):
    def __init__(self, spans: list[str]) -> None:
        self.spans = spans

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        self.spans.append(name)
        return trace.INVALID_SPAN


class RecordingTracerProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.spans: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return RecordingTracer(self.spans)


def test_no_spans_leave_confide_even_with_a_tracer_provider_set_up(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    provider = RecordingTracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    plain = FastAPI()
    plain.get("/ping")(lambda: {"ok": True})
    assert TestClient(plain).get("/ping").status_code == 200
    assert provider.spans, "a FastAPI app with its defaults traces: the check can fail"
    provider.spans.clear()
    me = world.api("carl").get("/api/v1/me")
    assert me.status_code == 200
    assert world.api("carl").get("/api/v1/unread").status_code == 200
    assert provider.spans == []
