"""Web Push (NT4): the VAPID public key, subscriptions (per device, owned by the
signed-in person) and push type preferences. Sending: jobs/push.py."""

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, StringConstraints

from confide.auth.vapid import VapidKeys
from confide.domain.errors import NotFound
from confide.services import push
from confide.web.api.schemas import In, PathId
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["push"])

Short = Annotated[str, StringConstraints(max_length=200)]


class KeysIn(In):
    p256dh: Short
    auth: Short


class SubscriptionIn(In):
    """What `PushSubscription.toJSON()` gives (`expirationTime` is accepted, unused)."""

    endpoint: Annotated[str, StringConstraints(max_length=2000)]
    keys: KeysIn
    expirationTime: int | None = None


class SubscriptionOut(BaseModel):
    id: int


class VapidOut(BaseModel):
    public_key: str


class PreferencesIn(In):
    new_message: bool | None = None


class PreferencesOut(BaseModel):
    new_message: bool


@router.get("/push/vapid-public-key")
def vapid_public_key(request: Request) -> VapidOut:
    """The `applicationServerKey` for `PushManager.subscribe` (public)."""
    keys: VapidKeys = request.app.state.vapid
    return VapidOut(public_key=keys.public_key)


@router.post("/push/subscriptions", status_code=201)
def subscribe(body: SubscriptionIn, actor: CurrentActor, runtime: RuntimeDep) -> SubscriptionOut:
    """This device's subscription for the signed-in person (again: replaces it)."""
    with runtime.write() as uow:
        sub_id = push.subscribe(
            uow,
            actor,
            endpoint=body.endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
            allow_local=runtime.settings.demo,
        )
        return SubscriptionOut(id=sub_id)


@router.delete("/push/subscriptions/{subscription_id}", status_code=204, response_class=Response)
def unsubscribe(subscription_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> Response:
    with runtime.write() as uow:
        if not push.unsubscribe(uow, actor, subscription_id):
            raise NotFound("push subscription")
        return Response(status_code=204)


@router.get("/push/preferences")
def get_preferences(actor: CurrentActor, runtime: RuntimeDep) -> PreferencesOut:
    with runtime.read() as uow:
        return PreferencesOut(**push.get_preferences(uow, actor))


@router.put("/push/preferences")
def set_preferences(
    body: PreferencesIn, actor: CurrentActor, runtime: RuntimeDep
) -> PreferencesOut:
    """NT4: which push types to receive (`new_message`; on unless turned off)."""
    changes = {k: v for k, v in body.model_dump().items() if v is not None}
    with runtime.write() as uow:
        return PreferencesOut(**push.set_preferences(uow, actor, changes))
