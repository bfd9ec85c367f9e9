"""Web Push (NT4): a person's subscriptions (one per device, owned by whoever made it)
and push type preferences, and who gets a push for a new message.

Who: team members, clients and contacts, signed in. A push goes to the participants of
the conversation other than the sender who may read it right now (the same
`access_conversation` check as the API: EN2, EN3, EN6 apply) and have the type on.
"""

from dataclasses import dataclass

from confide.domain import push
from confide.domain.actors import Actor, Party, PartyKind, Via
from confide.domain.errors import DomainError, InvalidInput, NotAuthenticated
from confide.domain.ids import PracticeId
from confide.services.access import access_conversation, acting_client_side, acting_member
from confide.store.repos.push import Subscription
from confide.store.uow import UnitOfWork


@dataclass(frozen=True)
class Delivery:
    subscription: Subscription
    payload: bytes


def _acting(uow: UnitOfWork, actor: Actor) -> Party:
    if actor.party.kind is PartyKind.MEMBER:
        acting_member(uow, actor)
    elif actor.is_client_side:
        acting_client_side(uow, actor)
    else:
        raise NotAuthenticated()
    return actor.party


def subscribe(
    uow: UnitOfWork, actor: Actor, *, endpoint: str, p256dh: str, auth: str, allow_local: bool
) -> int:
    party = _acting(uow, actor)
    push.check_subscription(endpoint, p256dh, auth, allow_local=allow_local)
    sub_id = uow.push.put_subscription(actor.practice_id, party, endpoint, p256dh, auth)
    uow.audit.record(actor, "push.subscribed", "push_subscription", sub_id)
    uow.commit()
    return sub_id


def unsubscribe(uow: UnitOfWork, actor: Actor, subscription_id: int) -> bool:
    party = _acting(uow, actor)
    done = uow.push.delete_subscription(actor.practice_id, party, subscription_id)
    if done:
        uow.audit.record(actor, "push.unsubscribed", "push_subscription", subscription_id)
    uow.commit()
    return done


def get_preferences(uow: UnitOfWork, actor: Actor) -> dict[str, bool]:
    """Every push type this product produces, on unless turned off."""
    party = _acting(uow, actor)
    stored = uow.push.get_preferences(actor.practice_id, party)
    return {t: stored.get(t, True) for t in push.PUSH_TYPES}


def set_preferences(uow: UnitOfWork, actor: Actor, changes: dict[str, bool]) -> dict[str, bool]:
    party = _acting(uow, actor)
    unknown = sorted(set(changes) - set(push.PUSH_TYPES))
    if unknown:
        raise InvalidInput("unknown_push_type", "Unknown push type: " + ", ".join(unknown)[:100])
    for push_type, enabled in changes.items():
        uow.push.set_preference(actor.practice_id, party, push_type, enabled)
    if changes:
        uow.audit.record(actor, "push.preferences_changed", party.kind.value, party.id, **changes)
    uow.commit()
    return get_preferences(uow, actor)


def new_message_deliveries(
    uow: UnitOfWork, practice_id: PracticeId, conversation_id: int, sender: Party | None
) -> list[Delivery]:
    """Read-only: the pushes one new message causes (NT1: ids and a title only).

    Subscriptions first: most participants of most conversations have none, and the
    access check (a dozen queries) is made only for those who do."""
    try:
        conversation = uow.conversations.get_conversation(practice_id, conversation_id)
    except DomainError:
        return []
    others = [p.party for p in conversation.participants if p.party != sender]
    subscriptions = uow.push.list_subscriptions(practice_id, others)
    readers: set[Party] = set()
    for party in {s.party for s in subscriptions}:
        try:
            access_conversation(uow, Actor(practice_id, party, Via.INTERNAL), conversation_id)
        except DomainError:
            continue  # may not read it now: no push
        prefs = uow.push.get_preferences(practice_id, party)
        if prefs.get(push.NEW_MESSAGE, True):
            readers.add(party)
    return [
        Delivery(s, push.new_message_payload(s.party.kind, conversation_id))
        for s in subscriptions
        if s.party in readers
    ]


def forget_gone_subscription(uow: UnitOfWork, subscription: Subscription) -> None:
    """The push service answered 404/410: the browser dropped it; so do we."""
    if uow.push.delete_gone(subscription.practice_id, subscription.id, subscription.endpoint):
        uow.audit.record(
            Actor.system(subscription.practice_id),
            "push.subscription_gone",
            "push_subscription",
            subscription.id,
        )
    uow.commit()
