"""Names and labels of the people in a conversation, for display.

Shown only to people who may see the conversation; never logged or audited.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from confide.domain.actors import Party, PartyKind
from confide.domain.entities import Member, Role
from confide.domain.ids import PracticeId
from confide.store.uow import UnitOfWork

ROLE_LABELS = {
    Role.ACCOUNT_OWNER: "Account owner",
    Role.CLINICIAN: "Clinician",
    Role.SUPERVISOR: "Supervisor",
    Role.PRACTICE_MANAGER: "Practice manager",
    Role.BILLER: "Biller",
    Role.SCHEDULER: "Scheduler",
}
_ROLE_ORDER = list(ROLE_LABELS)


@dataclass(frozen=True, slots=True)
class PartyInfo:
    party: Party
    name: str
    label: str  # "Clinician", "Client", "Contact (Mother)"
    away_on: bool = False
    away_text: str | None = None


def member_label(member: Member) -> str:
    roles = sorted(member.roles, key=_ROLE_ORDER.index)
    return ", ".join(ROLE_LABELS[r] for r in roles)


def member_info(member: Member) -> PartyInfo:
    return PartyInfo(
        member.party,
        member.name,
        member_label(member),
        member.away_on,
        member.away_text if member.away_on else None,
    )


def describe(
    uow: UnitOfWork, practice_id: PracticeId, parties: Iterable[Party]
) -> dict[Party, PartyInfo]:
    wanted = set(parties)
    out: dict[Party, PartyInfo] = {}
    member_ids = [p.id for p in wanted if p.kind is PartyKind.MEMBER]
    if member_ids:
        for m in uow.people.members_by_id(practice_id, member_ids).values():
            out[m.party] = member_info(m)
    for p in wanted:
        if p.kind is PartyKind.CLIENT:
            c = uow.people.get_client(practice_id, p.id)
            out[p] = PartyInfo(p, c.name, "Client")
        elif p.kind is PartyKind.CONTACT:
            k = uow.people.get_contact(practice_id, p.id)
            rel = f" ({k.relationship})" if k.relationship else ""
            out[p] = PartyInfo(p, k.name, f"Contact{rel}")
    return out
