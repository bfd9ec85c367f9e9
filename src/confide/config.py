"""Typed configuration (pydantic-settings, `CONFIDE_` prefix).

Outside demo mode the settings refuse what would be unsafe in front of real clients:
no master key for a server database, insecure cookies, a wildcard origin.
"""

from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONFIDE_", frozen=True, extra="ignore")

    # Where the embedded default keeps its database and master key file.
    data_dir: Path = Path("./confide-data")
    # Empty means SQLite in data_dir.
    database_url: str = ""
    # Base64 of 32 random bytes. Required outside demo mode for a server database;
    # the embedded default keeps it in data_dir/master.key (created at first start).
    master_key: SecretStr | None = None
    demo: bool = False
    # The public origin of the app (scheme://host[:port]); used for Origin checks.
    public_origin: str = "http://127.0.0.1:8000"
    secure_cookies: bool = True
    # Lower argon2 cost, for tests only.
    fast_password_hashing: bool = False
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    session_idle_minutes: int = Field(default=15, ge=5, le=60)
    session_absolute_hours: int = Field(default=12, ge=1, le=24)
    # trace, debug, info, warning, error, critical (uvicorn's names; trace = debug for
    # the app's own loggers).
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical"] = "info"
    # Redis for realtime fan-out across several `serve` processes (docs/scale-out.md);
    # unset: the in-process broker. May hold a password, so it is a secret.
    redis_url: SecretStr | None = None
    # --- data exports (issue 7) ---
    # Where finished export archives are kept until they expire (72 h, EX3); empty
    # means data_dir/exports. Several `serve`/worker processes need a shared folder.
    export_dir: Path | None = None

    # --- sign-in (issue 5) and Web Push (NT4): docs/security.md, docs/push.md ---------
    # OpenID Connect sign-in (PA3): any provider; off while oidc_issuer is empty.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = None
    # Default: {issuer}/.well-known/openid-configuration
    oidc_discovery_url: str = ""
    oidc_display_name: str = "Google"
    oidc_algorithms: tuple[str, ...] = ("RS256", "ES256")
    # Web Push (VAPID): the private key as PEM; unset, the embedded default keeps
    # vapid_private.pem in the data folder (made at first start).
    vapid_private_key: SecretStr | None = None
    # The VAPID `sub` claim: how push services reach the operator.
    vapid_subject: str = "mailto:operator@confide.invalid"
    # Failed sign-ins before a lockout, per account (email) and per client address,
    # within signin_window_minutes; a lockout lasts signin_window_minutes.
    signin_max_failures_account: int = Field(default=5, ge=1, le=100)
    signin_max_failures_ip: int = Field(default=30, ge=1, le=10_000)
    signin_window_minutes: int = Field(default=15, ge=1, le=24 * 60)

    # --- Jobs and email (docs/notifications.md) ---------------------------------------
    # smtp://[user:password@]host[:port] (STARTTLS when the server offers it; add
    # ?starttls=require to insist) or smtps://… (implicit TLS). Unset: emails are
    # written to data_dir/mail as .eml files (and shown at /dev/mailbox in demo mode).
    smtp_url: SecretStr | None = None
    mail_from: str = "Confide <no-reply@confide.invalid>"
    # Run the job runner inside `confide serve` (off when `confide worker` processes
    # do the work).
    run_jobs: bool = True
    # NT3: minutes a message may stay unread before the email.
    unread_email_minutes: float = Field(default=10, gt=0, le=24 * 60)
    # PA2: lifetime of an instant sign-in link (10 minutes; at most 24 hours).
    instant_sign_in_minutes: int = Field(default=10, ge=1, le=24 * 60)
    password_reset_minutes: int = Field(default=60, ge=5, le=24 * 60)
    # Emailed-link requests (PA2, password reset) per IP address per 15 minutes.
    link_requests_per_ip: int = Field(default=20, ge=1)
    # A claimed job is another worker's again after this long (a worker died mid-job);
    # longer than the SMTP timeout (20 s).
    job_lease_seconds: int = Field(default=60, ge=1, le=3600)
    job_concurrency: int = Field(default=4, ge=1, le=64)

    # --- Send rate and overload (T11, T39; docs/operations.md, "Overload") -------------
    # T11: message sends and conversation starts per sender (a team member or a
    # client-side party), a token bucket: `send_rate_per_second` on average, bursts of
    # up to `send_burst`. Counted per `serve` process (docs/security.md). 0 turns the
    # limit off (the benchmarks say so explicitly).
    send_rate_per_second: float = Field(default=10, ge=0)
    send_burst: int = Field(default=20, ge=1)
    # T39 admission bounds, per process: past them a request is refused at once (503
    # `overloaded` with Retry-After, or a socket closed with 1013) instead of queued.
    # Sends waiting for the group committer (store/group.py): ~1 s of sends at the
    # ceiling measured on the 2-core machine (264/s, docs/benchmarks.md).
    max_pending_writes: int = Field(default=256, ge=1)
    # HTTP requests in progress (sync routes otherwise pile up behind anyio's 40
    # threads without end); /healthz is never refused.
    max_concurrent_requests: int = Field(default=512, ge=1)
    # Open sockets: ~27 KB each (docs/benchmarks.md), so 20,000 stay near 550 MB.
    max_websockets: int = Field(default=20_000, ge=1)
    # How long a SQLite write waits for another process's lock before the request gets
    # 503 `database_unavailable` (tests set it low).
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0, le=600_000)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Self:
        if self.demo:
            return self
        problems = []
        if self.is_server_database and self.master_key is None:
            problems.append(
                "CONFIDE_MASTER_KEY must be set when the database is a server "
                "(the key must live outside the database)"
            )
        if not self.secure_cookies:
            problems.append("CONFIDE_SECURE_COOKIES=false is allowed only in demo mode")
        if "*" in self.public_origin:
            problems.append("CONFIDE_PUBLIC_ORIGIN cannot be a wildcard")
        if self.log_level == "trace":
            # uvicorn's trace level logs whole ASGI scopes, query strings included.
            problems.append("CONFIDE_LOG_LEVEL=trace is for development (demo mode) only")
        if self.fast_password_hashing:
            problems.append("CONFIDE_FAST_PASSWORD_HASHING is for tests and demo mode only")
        if self.oidc_issuer and not self.oidc_issuer.startswith("https://"):
            problems.append("CONFIDE_OIDC_ISSUER must be an https:// URL")
        if problems:
            raise ValueError("unsafe settings outside demo mode: " + "; ".join(problems))
        return self

    @property
    def is_server_database(self) -> bool:
        return bool(self.database_url) and not self.database_url.startswith("sqlite")

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'confide.db').resolve()}"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def resolved_export_dir(self) -> Path:
        """Data exports' archives (issue 7): `export_dir`, or data_dir/exports."""
        return self.export_dir if self.export_dir is not None else self.data_dir / "exports"

    @property
    def vapid_key_file(self) -> Path:
        return self.data_dir / "vapid_private.pem"
