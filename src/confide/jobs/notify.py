"""Job handlers that send email: NT2/NT3 notifications, announcement alerts (AN1),
instant sign-in (PA2) and password reset links. Each decides and claims in one
transaction (services), sends after it committed, then records the send (audited, ids
only)."""

from datetime import timedelta

from anyio import to_thread

from confide.jobs.mail import Mailer, compose, make_mailer
from confide.jobs.runner import Defer, JobContext, JobRunner, Registry
from confide.runtime import Runtime
from confide.services import announcements, email_links, notifications, team
from confide.store.repos.jobs import Job
from confide.store.uow import unit_of_work


def _origin(ctx: JobContext) -> str:
    return ctx.settings.public_origin


async def notification_email(ctx: JobContext, job: Job) -> None:
    """NT2 (`notify.client_email`) and NT3 (`notify.unread_email`)."""
    party = notifications.parse_party(str(job.payload["party"]))
    delay = timedelta(minutes=ctx.settings.unread_email_minutes)

    def prepare() -> notifications.Prepared | notifications.Wait | None:
        with unit_of_work(ctx.db, write=True) as uow:
            return notifications.prepare_email(
                uow,
                job.practice_id,
                kind=job.kind,
                conversation_id=int(job.payload["conversation_id"]),
                party=party,
                origin=_origin(ctx),
                delay=delay,
                job_id=job.id,
            )

    prepared = await to_thread.run_sync(prepare)
    if prepared is None:
        return
    if isinstance(prepared, notifications.Wait):
        raise Defer(prepared.until)
    await _send_prepared(ctx, prepared)


async def announcement_email(ctx: JobContext, job: Job) -> None:
    """AN1: the email alert of an announcement for one client (NT1: no text, no name)."""

    def prepare() -> notifications.Prepared | None:
        with unit_of_work(ctx.db, write=True) as uow:
            return announcements.prepare_announcement_email(
                uow,
                job.practice_id,
                announcement_id=int(job.payload["announcement_id"]),
                client_id=int(job.payload["client_id"]),
                origin=_origin(ctx),
                job_id=job.id,
            )

    prepared = await to_thread.run_sync(prepare)
    if prepared is None:
        return
    await _send_prepared(ctx, prepared)


async def _send_prepared(ctx: JobContext, prepared: notifications.Prepared) -> None:
    message = compose(
        prepared.notice,
        to=prepared.to,
        mail_from=ctx.settings.mail_from,
        message_id=prepared.message_id,
    )
    await ctx.mailer.send(message)

    def record() -> None:
        with unit_of_work(ctx.db, write=True) as uow:
            notifications.mark_sent(uow, prepared)

    await to_thread.run_sync(record)


async def _link_emails(ctx: JobContext, job: Job, *, reset: bool) -> None:
    def prepare() -> list[email_links.LinkEmail]:
        with unit_of_work(ctx.db, write=True) as uow:
            address = email_links.unseal_job_email(uow, job.kind, str(job.payload["email"]))
            if reset:
                return email_links.prepare_password_reset(
                    uow,
                    email=address,
                    origin=_origin(ctx),
                    ttl=timedelta(minutes=ctx.settings.password_reset_minutes),
                )
            return email_links.prepare_instant_sign_in(
                uow,
                email=address,
                origin=_origin(ctx),
                ttl=timedelta(minutes=ctx.settings.instant_sign_in_minutes),
            )

    await _send_link_emails(ctx, await to_thread.run_sync(prepare))


async def _send_link_emails(ctx: JobContext, items: list[email_links.LinkEmail]) -> None:
    for item in items:
        message = compose(
            item.notice,
            to=item.to,
            mail_from=ctx.settings.mail_from,
            message_id=f"link-{item.practice_id}-{item.link_id}",
        )
        await ctx.mailer.send(message)

        def record(sent: email_links.LinkEmail = item) -> None:
            with unit_of_work(ctx.db, write=True) as uow:
                email_links.record_link_email_sent(uow, sent)

        await to_thread.run_sync(record)


async def invitation_email(ctx: JobContext, job: Job) -> None:
    def prepare() -> list[email_links.LinkEmail]:
        with unit_of_work(ctx.db, write=True) as uow:
            return email_links.prepare_invitation(
                uow, job.practice_id, int(job.payload["member_id"]), origin=_origin(ctx)
            )

    await _send_link_emails(ctx, await to_thread.run_sync(prepare))


async def instant_sign_in_email(ctx: JobContext, job: Job) -> None:
    await _link_emails(ctx, job, reset=False)


async def password_reset_email(ctx: JobContext, job: Job) -> None:
    await _link_emails(ctx, job, reset=True)


def default_registry() -> Registry:
    """Every handler of this product. (Web push and data export register here too.)"""
    registry = Registry()
    registry.register(notifications.CLIENT_EMAIL, notification_email)
    registry.register(notifications.UNREAD_EMAIL, notification_email)
    registry.register(email_links.INSTANT_SIGN_IN_JOB, instant_sign_in_email)
    registry.register(email_links.PASSWORD_RESET_JOB, password_reset_email)
    registry.register(team.INVITATION_JOB, invitation_email)
    registry.register(announcements.EMAIL_JOB, announcement_email)
    return registry


def build_runner(runtime: Runtime, *, mailer: Mailer | None = None) -> JobRunner:
    """The runner of `serve` and `confide worker`, from the settings."""
    settings = runtime.settings
    smtp = settings.smtp_url.get_secret_value() if settings.smtp_url else None
    ctx = JobContext(runtime.db, settings, mailer or make_mailer(smtp, settings.mail_dir))
    return JobRunner(
        ctx,
        default_registry(),
        concurrency=settings.job_concurrency,
        lease=timedelta(seconds=settings.job_lease_seconds),
    )
