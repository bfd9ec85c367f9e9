from tests.personas import World, start


def test_ms1_member_sends_and_client_reads(world: World):
    sent = start(world, "carl", client="alex", text="Hi Alex :grin:")
    conv = sent.conversation.id
    r = world.api("alex").get(f"/api/v1/conversations/{conv}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["text"] for m in body["messages"]] == ["Hi Alex 😁"]
    r = world.api("alex").post(
        f"/api/v1/conversations/{conv}/messages", json={"text": "Thanks", "idempotency_key": "a1"}
    )
    assert r.status_code == 201, r.text
    assert world.api("carl").get("/api/v1/unread").json() == {"unread": 1}
