"""Settings > Audit log (RC1): the account owner and practice managers view the
practice's audit log, filter it (who, action, target, date range), page through it and
download it as CSV, over the same service as the JSON API (web/api/audit.py).

The filters travel in the query string: ids, kinds, action names and dates only, no
name and no text. Dates are whole days in UTC ("to" included). The CSV link is the
API's `/api/v1/audit.csv` with the same filters (the session authenticates it).
Viewing and exporting are audited by the service (`audit_log.viewed`, `.exported`).
"""

import json
from datetime import date, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from confide.domain.errors import InvalidInput
from confide.services import audit_trail, team
from confide.web.deps import RuntimeDep
from confide.web.pages.common import PageActor, member_nav, render

router = APIRouter(include_in_schema=False)
PAGE = 50
KINDS = (("client", "Any client"), ("contact", "Any contact"), ("system", "Confide (system)"))


def _day(text: str, what: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput("invalid_time", f"{what} is a date such as 2026-03-01.") from None


@router.get("/settings/audit")
def audit_page(
    request: Request,
    actor: PageActor,
    runtime: RuntimeDep,
    who: str = Query("", max_length=60),
    action: str = Query("", max_length=60),
    target: str = Query("", max_length=60),
    from_date: str = Query("", alias="from", max_length=10),
    to_date: str = Query("", alias="to", max_length=10),
    before: int | None = Query(None, ge=1, le=2**62),
) -> Response:
    start, end = _day(from_date, "From"), _day(to_date, "To")
    filters = audit_trail.build_filters(
        actor=who,
        action=action,
        target=target,
        at_from=f"{start.isoformat()}T00:00:00+00:00" if start else None,
        at_to=f"{(end + timedelta(days=1)).isoformat()}T00:00:00+00:00" if end else None,
    )
    with runtime.write() as uow:
        nav = member_nav(uow, actor)
        page = audit_trail.list_audit_events(uow, actor, filters, before_seq=before, limit=PAGE)
        members = sorted(team.list_members(uow, actor), key=lambda m: m.name.casefold())
    given = {"who": who, "action": action, "target": target, "from": from_date, "to": to_date}
    kept = {k: v for k, v in given.items() if v}
    meta = filters.as_meta()  # validated: kinds, ids, an action name, aware times
    csv_query = {
        "actor": meta["filter_actor"],
        "action": meta["filter_action"],
        "target": meta["filter_target"],
        "from": meta["filter_from"],
        "to": meta["filter_to"],
    }
    csv_query = {k: v for k, v in csv_query.items() if v}
    return render(
        request,
        "settings_audit.html",
        nav=nav,
        active="settings",
        section="audit",
        entries=page.entries,
        given=given,
        members=members,
        kinds=KINDS,
        filtered=bool(kept),
        paged=before is not None,
        first_url="/settings/audit" + (f"?{urlencode(kept)}" if kept else ""),
        next_url=f"/settings/audit?{urlencode({**kept, 'before': page.next_before_seq})}"
        if page.next_before_seq
        else None,
        csv_url="/api/v1/audit.csv" + (f"?{urlencode(csv_query)}" if csv_query else ""),
        meta_text=lambda meta: json.dumps(meta, sort_keys=True, separators=(", ", ": ")),
    )
