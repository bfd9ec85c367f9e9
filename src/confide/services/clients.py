"""Clients and contacts: records, portal access and secure messaging (EN3-EN6), and
who has access to them (grants)."""

from dataclasses import dataclass

from confide.domain import policy
from confide.domain.actors import Actor
from confide.domain.entities import Client, Contact, Member, Role
from confide.domain.errors import InvalidInput, NotFound
from confide.domain.ids import ClientId, ContactId, MemberId
from confide.domain.text import prepare_email, prepare_name, prepare_search
from confide.services.access import access_client, acting_member, load_practice, require
from confide.store.uow import UnitOfWork


@dataclass(frozen=True)
class ClientDetail:
    client: Client
    contacts: list[Contact]
    granted_member_ids: list[MemberId]
    may_edit: bool


def create_client(
    uow: UnitOfWork,
    actor: Actor,
    *,
    name: str,
    email: str | None,
    primary_clinician_id: int | None,
) -> Client:
    """EN4: while "allow secure messaging for new clients" is on, a new client gets
    portal access and secure messaging on."""
    me = acting_member(uow, actor)
    require(policy.may_create_client(me.member))
    practice = load_practice(uow, actor)
    clinician: Member | None = None
    if primary_clinician_id is not None:
        clinician = uow.people.get_member(actor.practice_id, primary_clinician_id)
        if not clinician.is_clinician:
            raise InvalidInput("not_a_clinician", "The primary clinician must be a clinician.")
    auto = practice.auto_allow_new_clients
    client_id = uow.people.insert_client(
        actor.practice_id,
        name=prepare_name(name, "client name"),
        email=prepare_email(email) if email else None,
        primary_clinician_id=clinician.id if clinician else None,
        portal_access=auto,
        messaging_enabled=auto,
    )
    uow.audit.record(actor, "client.created", "client", client_id, auto_messaging=auto)
    uow.commit()
    return uow.people.get_client(actor.practice_id, client_id)


def list_clients(uow: UnitOfWork, actor: Actor, *, q: str = "", limit: int = 200) -> list[Client]:
    me = acting_member(uow, actor)
    return uow.people.list_visible_clients(actor.practice_id, me, q=prepare_search(q), limit=limit)


def get_client(uow: UnitOfWork, actor: Actor, client_id: int) -> ClientDetail:
    ctx = access_client(uow, actor, client_id)
    uow.audit.record(actor, "client.viewed", "client", ctx.client.id)
    detail = ClientDetail(
        ctx.client,
        list(uow.people.list_contacts(actor.practice_id, ctx.client.id)),
        uow.people.list_grants(actor.practice_id, ctx.client.id),
        bool(policy.may_edit_client(ctx.me, ctx.client)),
    )
    uow.commit()
    return detail


def set_client_messaging(
    uow: UnitOfWork,
    actor: Actor,
    client_id: int,
    *,
    portal_access: bool | None = None,
    messaging_enabled: bool | None = None,
) -> Client:
    """EN3, EN5, EN6: the only writer of a client's portal access and messaging box.

    Turning either off stops the client's reading and sending at once: the policy
    checks them on every request, and an outbox event closes their open sockets.
    The history stays intact for the team.
    """
    ctx = access_client(uow, actor, client_id)
    require(policy.may_edit_client(ctx.me, ctx.client))
    changes: dict[str, object] = {}
    if portal_access is not None and portal_access != ctx.client.portal_access:
        changes["portal_access"] = portal_access
    if messaging_enabled is not None and messaging_enabled != ctx.client.messaging_enabled:
        changes["messaging_enabled"] = messaging_enabled
    if changes:
        uow.people.update_client(actor.practice_id, ctx.client.id, **changes)
        uow.audit.record(actor, "client.messaging_changed", "client", ctx.client.id, **changes)
        if False in changes.values():
            uow.outbox.add(actor.practice_id, "client.messaging_off", client_id=ctx.client.id)
    uow.commit()
    return uow.people.get_client(actor.practice_id, ctx.client.id)


def enable_client_messaging(uow: UnitOfWork, actor: Actor, client_id: int) -> Client:
    """EN5: the "Enable secure messaging" step offered before writing to a client."""
    return set_client_messaging(uow, actor, client_id, portal_access=True, messaging_enabled=True)


def add_contact(
    uow: UnitOfWork,
    actor: Actor,
    client_id: int,
    *,
    name: str,
    email: str | None,
    relationship: str = "",
    portal_access: bool = False,
    messaging_enabled: bool = False,
) -> Contact:
    ctx = access_client(uow, actor, client_id)
    require(policy.may_edit_client(ctx.me, ctx.client))
    contact_id = uow.people.insert_contact(
        actor.practice_id,
        ctx.client.id,
        name=prepare_name(name, "contact name"),
        email=prepare_email(email) if email else None,
        relationship=prepare_name(relationship, "relationship") if relationship.strip() else "",
        portal_access=portal_access,
        messaging_enabled=messaging_enabled,
    )
    uow.audit.record(actor, "contact.added", "contact", contact_id, client_id=ctx.client.id)
    uow.commit()
    return uow.people.get_contact(actor.practice_id, contact_id)


def set_contact_messaging(
    uow: UnitOfWork,
    actor: Actor,
    contact_id: int,
    *,
    portal_access: bool | None = None,
    messaging_enabled: bool | None = None,
) -> Contact:
    """EN3/EN6 for a contact: their own portal access and messaging box."""
    me = acting_member(uow, actor)
    try:
        contact = uow.people.get_contact(actor.practice_id, contact_id)
        client = uow.people.get_client(actor.practice_id, contact.client_id)
    except NotFound:
        raise NotFound("contact") from None
    if not policy.has_client_access(me, client):
        raise NotFound("contact")
    require(policy.may_edit_client(me, client))
    changes: dict[str, object] = {}
    if portal_access is not None and portal_access != contact.portal_access:
        changes["portal_access"] = portal_access
    if messaging_enabled is not None and messaging_enabled != contact.messaging_enabled:
        changes["messaging_enabled"] = messaging_enabled
    if changes:
        uow.people.update_contact(actor.practice_id, ContactId(contact.id), **changes)
        uow.audit.record(actor, "contact.messaging_changed", "contact", contact.id, **changes)
        if False in changes.values():
            uow.outbox.add(actor.practice_id, "contact.messaging_off", contact_id=contact.id)
    uow.commit()
    return uow.people.get_contact(actor.practice_id, contact.id)


def set_client_access_grant(
    uow: UnitOfWork, actor: Actor, client_id: int, member_id: int, *, on: bool
) -> list[MemberId]:
    """Grant (or end) a clinician's or supervisor's access to a client."""
    me = acting_member(uow, actor)
    require(policy.may_grant_client_access(me.member))
    client = uow.people.get_client(actor.practice_id, client_id)
    member = uow.people.get_member(actor.practice_id, member_id)
    if not (member.is_clinician or member.has(Role.SUPERVISOR)):
        raise InvalidInput(
            "grant_not_applicable",
            "Only clinicians and supervisors are granted access to clients; "
            "other roles see every client.",
        )
    if uow.people.set_grant(actor.practice_id, ClientId(client.id), member.id, me.member.id, on):
        uow.audit.record(
            actor,
            "client_access.granted" if on else "client_access.revoked",
            "client",
            client.id,
            member_id=member.id,
        )
        if not on:
            uow.outbox.add(
                actor.practice_id, "access.changed", member_id=member.id, client_id=client.id
            )
    uow.commit()
    return uow.people.list_grants(actor.practice_id, ClientId(client.id))
