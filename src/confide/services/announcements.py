"""Announcements to clients (AN1, plus plan).

- Who sends (`policy.may_send_announcement`, PL2): the account owner and practice
  managers to all active clients; a clinician to their own active clients (those they
  are primary clinician of). Other team members: `403 not_permitted`; a practice not on
  the plus plan: `403 plan_required`; clients and contacts: the NotFound of a route
  that does not exist (PM7).
- The text follows the message rules (MS1, MS2, MS4: 1 to 5,000 characters after emoji
  codes, plain text) and is encrypted at rest (RC2). The audience is fixed when it is
  sent: the active clients then. None at all: `422 no_recipients`.
- Clients see their announcements in the portal (`list_announcements`; a contact sees
  their client's); there is no way to reply: an announcement is not a conversation
  (PM6: no message goes to several clients at once).
- Email alert (NT1): one job `announcement.email` per recipient who has portal access
  and an email address, written in the sending transaction, ids only
  (`{"announcement_id", "client_id"}`). The job (jobs/notify.py) looks again when it
  runs (`prepare_announcement_email`: still active, portal access, an address), claims
  the one alert of that announcement for that client, and sends the generic "you have a
  new message in your client portal" email with a link to the portal's announcements:
  never the text, the author or the client's name; the practice's name only if it
  chose to be named (NT1).
- Audited: `announcement.sent` (recipients counted, ids only) and `announcements.viewed`.
"""

from dataclasses import dataclass

from confide.domain import policy
from confide.domain.actors import Actor, Party
from confide.domain.announcements import Announcement, Audience
from confide.domain.entities import Role
from confide.domain.errors import InvalidInput, NotFound
from confide.domain.ids import MemberId, PracticeId
from confide.domain.notices import AnnouncementAlert, LinkUrl, PracticeLabel
from confide.domain.text import prepare_message_text
from confide.services.access import acting_client_side, acting_member, load_practice, require
from confide.services.directory import PartyInfo, describe
from confide.services.notifications import Prepared
from confide.store.uow import UnitOfWork

MAX_PAGE = 100
EMAIL_JOB = "announcement.email"
PORTAL_PATH = "/portal/announcements"


@dataclass(frozen=True)
class AnnouncementView:
    announcement: Announcement
    author: PartyInfo | None


def send_announcement(
    uow: UnitOfWork, actor: Actor, *, audience: Audience, text: str
) -> AnnouncementView:
    """AN1: store the announcement for its audience, alert them by email (after
    commit, through the outbox), audit it."""
    me = acting_member(uow, actor)
    practice = load_practice(uow, actor)
    require(
        policy.may_send_announcement(
            practice, me.member, to_all_clients=audience is Audience.ALL_CLIENTS
        )
    )
    body = prepare_message_text(text)
    pid = actor.practice_id
    clinician = MemberId(me.member.id) if audience is Audience.MY_CLIENTS else None
    audience_rows = uow.announcements.list_audience(pid, primary_clinician_id=clinician)
    if not audience_rows:
        raise InvalidInput(
            "no_recipients",
            "There is no active client to send this to."
            if audience is Audience.ALL_CLIENTS
            else "You are not the primary clinician of any active client.",
        )
    made = uow.announcements.insert_announcement(
        pid,
        author_id=MemberId(me.member.id),
        audience=audience,
        text=body,
        client_ids=[c for c, _ in audience_rows],
    )
    alerts = 0
    for client_id, reachable in audience_rows:
        if reachable:
            uow.jobs.enqueue(
                pid,
                EMAIL_JOB,
                {"announcement_id": made.id, "client_id": int(client_id)},
                dedupe_key=f"an1:{pid}:{made.id}:{client_id}",
            )
            alerts += 1
    uow.audit.record(
        actor,
        "announcement.sent",
        "announcement",
        made.id,
        audience=audience.value,
        recipients=made.recipients,
        email_alerts=alerts,
    )
    author = describe(uow, pid, [me.member.party]).get(me.member.party)
    uow.commit()
    return AnnouncementView(made, author)


def list_announcements(
    uow: UnitOfWork, actor: Actor, *, before_id: int | None = None, limit: int = 50
) -> list[AnnouncementView]:
    """A client (or their contact) sees what they received; the account owner and
    practice managers see every announcement of the practice, other team members the
    ones they sent. Newest first. Audited (`announcements.viewed`)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_limit", f"limit must be between 1 and {MAX_PAGE}.")
    pid = actor.practice_id
    if actor.is_client_side:
        client, _contact = acting_client_side(uow, actor)
        found = uow.announcements.list_for_client(pid, client.id, before_id=before_id, limit=limit)
        target = ("client", int(client.id))
    else:
        me = acting_member(uow, actor)
        every = me.member.has(Role.ACCOUNT_OWNER) or me.member.has(Role.PRACTICE_MANAGER)
        found = uow.announcements.list_sent(
            pid,
            author_id=None if every else MemberId(me.member.id),
            before_id=before_id,
            limit=limit,
        )
        target = ("practice", int(pid))
    authors = describe(uow, pid, {Party.member(a.author_id) for a in found})
    uow.audit.record(
        actor, "announcements.viewed", target[0], target[1], announcement_ids=[a.id for a in found]
    )
    uow.commit()
    return [AnnouncementView(a, authors.get(Party.member(a.author_id))) for a in found]


def prepare_announcement_email(
    uow: UnitOfWork,
    practice_id: PracticeId,
    *,
    announcement_id: int,
    client_id: int,
    origin: str,
    job_id: int,
) -> Prepared | None:
    """The email alert of an announcement for one recipient (AN1, NT1), decided when
    the job runs and claimed (one per announcement and client). Commits. None: nothing
    to send (no longer a recipient who can open the portal, no address, or sent)."""
    try:
        client = uow.people.get_client(practice_id, client_id)
    except NotFound:
        return None
    if (
        not client.active
        or not client.portal_access
        or not client.email
        or not uow.announcements.is_recipient(practice_id, announcement_id, client.id)
    ):
        return None
    claim = uow.notifications.claim_announcement_email(
        practice_id, announcement_id=announcement_id, party=client.party, job_id=job_id
    )
    if claim is None:
        uow.commit()
        return None  # sent already (or another job's claim)
    practice = uow.practices.get_practice(practice_id)
    notice = AnnouncementAlert(
        link=LinkUrl(origin, PORTAL_PATH),
        practice=PracticeLabel.if_allowed(
            practice.name, name_practice=uow.notifications.get_name_practice(practice_id)
        ),
    )
    uow.commit()
    return Prepared(
        practice_id,
        claim,
        client.party,
        client.email,
        notice,
        message_id=f"announcement-{practice_id}-{claim}",
    )
