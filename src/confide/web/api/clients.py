"""Clients, contacts, portal access and messaging (EN3, EN5, EN6), access grants."""

from fastapi import APIRouter, Query

from confide.services import clients
from confide.web.api.schemas import (
    ClientDetailOut,
    ClientIn,
    ClientOut,
    ClientSearchIn,
    ContactIn,
    ContactOut,
    GrantsOut,
    PathId,
    PortalIn,
)
from confide.web.deps import CurrentActor, RuntimeDep

router = APIRouter(tags=["clients"])


@router.get("/clients")
def list_clients(
    actor: CurrentActor,
    runtime: RuntimeDep,
    limit: int = Query(200, ge=1, le=500),
) -> list[ClientOut]:
    """The clients the member has access to. To search by name: `POST /clients/search`."""
    with runtime.read() as uow:
        return [ClientOut.of(c) for c in clients.list_clients(uow, actor, limit=limit)]


@router.post("/clients/search")
def search_clients(
    body: ClientSearchIn, actor: CurrentActor, runtime: RuntimeDep
) -> list[ClientOut]:
    """The clients the member has access to whose name matches `q`. The term is in the
    body so that it reaches no URL (access logs, proxies, history)."""
    with runtime.read() as uow:
        found = clients.list_clients(uow, actor, q=body.q, limit=body.limit)
        return [ClientOut.of(c) for c in found]


@router.post("/clients", status_code=201)
def create_client(body: ClientIn, actor: CurrentActor, runtime: RuntimeDep) -> ClientOut:
    with runtime.write() as uow:
        return ClientOut.of(
            clients.create_client(
                uow,
                actor,
                name=body.name,
                email=body.email,
                primary_clinician_id=body.primary_clinician_id,
            )
        )


@router.get("/clients/{client_id}")
def get_client(client_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> ClientDetailOut:
    with runtime.write() as uow:
        d = clients.get_client(uow, actor, client_id)
        return ClientDetailOut(
            **ClientOut.of(d.client).model_dump(),
            contacts=[ContactOut.of(c) for c in d.contacts],
            granted_member_ids=list(d.granted_member_ids),
            may_edit=d.may_edit,
        )


@router.patch("/clients/{client_id}/portal")
def set_portal(
    client_id: PathId, body: PortalIn, actor: CurrentActor, runtime: RuntimeDep
) -> ClientOut:
    """EN3/EN6: portal access and "Use secure messaging" for the client."""
    with runtime.write() as uow:
        return ClientOut.of(
            clients.set_client_messaging(
                uow,
                actor,
                client_id,
                portal_access=body.portal_access,
                messaging_enabled=body.messaging_enabled,
            )
        )


@router.post("/clients/{client_id}/enable-messaging")
def enable_messaging(client_id: PathId, actor: CurrentActor, runtime: RuntimeDep) -> ClientOut:
    """EN5: "Enable secure messaging" (portal access and messaging on)."""
    with runtime.write() as uow:
        return ClientOut.of(clients.enable_client_messaging(uow, actor, client_id))


@router.post("/clients/{client_id}/contacts", status_code=201)
def add_contact(
    client_id: PathId, body: ContactIn, actor: CurrentActor, runtime: RuntimeDep
) -> ContactOut:
    with runtime.write() as uow:
        return ContactOut.of(
            clients.add_contact(
                uow,
                actor,
                client_id,
                name=body.name,
                email=body.email,
                relationship=body.relationship,
                portal_access=body.portal_access,
                messaging_enabled=body.messaging_enabled,
            )
        )


@router.patch("/contacts/{contact_id}/portal")
def set_contact_portal(
    contact_id: PathId, body: PortalIn, actor: CurrentActor, runtime: RuntimeDep
) -> ContactOut:
    with runtime.write() as uow:
        return ContactOut.of(
            clients.set_contact_messaging(
                uow,
                actor,
                contact_id,
                portal_access=body.portal_access,
                messaging_enabled=body.messaging_enabled,
            )
        )


@router.put("/clients/{client_id}/access/{member_id}")
def grant_access(
    client_id: PathId, member_id: PathId, actor: CurrentActor, runtime: RuntimeDep
) -> GrantsOut:
    with runtime.write() as uow:
        return GrantsOut(
            member_ids=clients.set_client_access_grant(uow, actor, client_id, member_id, on=True)
        )


@router.delete("/clients/{client_id}/access/{member_id}")
def revoke_access(
    client_id: PathId, member_id: PathId, actor: CurrentActor, runtime: RuntimeDep
) -> GrantsOut:
    with runtime.write() as uow:
        return GrantsOut(
            member_ids=clients.set_client_access_grant(uow, actor, client_id, member_id, on=False)
        )
