"""T39: the HTTP admission bound (web/admission.py), in process.

With `limit` requests in progress the next one gets 503 `overloaded` with Retry-After: 1
at once, without its body being read or its route run; /healthz still answers; once a
request is done, the next one gets in. (The same bound on a real server under twice
its capacity: tests/integration/test_overload.py.)
"""

import asyncio

import httpx
from starlette.types import Receive, Scope, Send

from confide.web.admission import AdmissionControl


def test_t39_requests_past_the_bound_get_503_at_once_and_healthz_still_answers():
    release = asyncio.Event()
    ran: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        ran.append(scope["path"])
        if scope["path"] == "/slow":
            await release.wait()
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gate = AdmissionControl(app, limit=2)

    async def run() -> None:
        transport = httpx.ASGITransport(app=gate)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            held = [asyncio.create_task(client.post("/slow", content=b"x")) for _ in range(2)]
            while gate.active < 2:
                await asyncio.sleep(0.01)
            shed = await client.post("/fast", content=b"body")
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "1"
            assert shed.json()["error"]["code"] == "overloaded"
            assert "/fast" not in ran  # refused before the app
            health = await client.get("/healthz")
            assert health.status_code == 200
            release.set()
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
            assert (await client.post("/fast", content=b"body")).status_code == 200
        assert gate.active == 0
        assert gate.refused == 1

    asyncio.run(run())
