"""What a notification email may say (NT1), as types.

An email template receives one `Notice` and nothing else. Every field of a notice has
one of the types in `ALLOWED_FIELD_TYPES`: a link (an origin and a fixed path with an
opaque token), the practice's name only when the practice turned "name the practice in
notifications" on (`PracticeLabel.if_allowed`), or a number. There is no plain `str`
field, so no message text, client name, away text or address can reach a template:
the renderer refuses anything else at construction (`__post_init__`), and
tests/unit/test_notices.py checks the annotations of every notice.
"""

import re
from dataclasses import dataclass, fields
from typing import ClassVar, Union, get_args, get_type_hints

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,100}")
_PATH = re.compile(r"/[a-z0-9/_-]*")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class LinkUrl:
    """`origin` + a fixed `path` (+ an opaque token). Nothing a user typed fits: the
    parts are checked against narrow patterns."""

    origin: str
    path: str
    token: str = ""

    def __post_init__(self) -> None:
        if not _ORIGIN.fullmatch(self.origin.rstrip("/")):
            raise ValueError("a link origin is scheme://host[:port]")
        if not _PATH.fullmatch(self.path):
            raise ValueError("a link path is a fixed lowercase path")
        if self.token and not _TOKEN.fullmatch(self.token):
            raise ValueError("a link token is url-safe base64")

    def __str__(self) -> str:
        return self.origin.rstrip("/") + self.path + self.token


@dataclass(frozen=True, slots=True)
class PracticeLabel:
    """The practice's name, for client emails only, and only when the practice chose
    to be named (NT1: off by default; the name alone can reveal treatment)."""

    name: str

    @classmethod
    def if_allowed(cls, name: str, *, name_practice: bool) -> "PracticeLabel | None":
        return cls(name) if name_practice else None

    def __str__(self) -> str:
        return self.name


ALLOWED_FIELD_TYPES = frozenset({LinkUrl, PracticeLabel, int, type(None)})


@dataclass(frozen=True, slots=True)
class _Notice:
    template: ClassVar[str]
    subject: ClassVar[str]

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in fields(self):
            allowed = _flatten(hints[f.name])
            if not allowed <= ALLOWED_FIELD_TYPES:
                raise TypeError(f"{type(self).__name__}.{f.name} has a type a notice may not hold")
            if type(getattr(self, f.name)) not in allowed:
                raise TypeError(f"{type(self).__name__}.{f.name} got a value of another type")

    def subject_line(self) -> str:
        practice = getattr(self, "practice", None)
        return f"{self.subject} from {practice}" if practice is not None else self.subject


def _flatten(tp: object) -> frozenset[type]:
    args = get_args(tp)
    if args:
        return frozenset(t for a in args for t in _flatten(a))
    return frozenset({tp}) if isinstance(tp, type) else frozenset()


@dataclass(frozen=True, slots=True)
class ClientMessageAlert(_Notice):
    """NT2 / NT3 for a client or contact: a secure message is waiting; the portal link
    (PA1) opens that conversation for 24 hours."""

    template: ClassVar[str] = "client_message"
    subject: ClassVar[str] = "You have a new secure message"
    link: LinkUrl
    valid_hours: int
    practice: PracticeLabel | None = None


@dataclass(frozen=True, slots=True)
class MemberUnreadAlert(_Notice):
    """NT3 for a team member: a secure message has waited 10 minutes. Not even "from a
    client's name": the email says a secure message is waiting, nothing more."""

    template: ClassVar[str] = "member_unread"
    subject: ClassVar[str] = "A secure message is waiting for you"
    app: LinkUrl
    minutes: int


@dataclass(frozen=True, slots=True)
class InstantSignIn(_Notice):
    """PA2: the instant sign-in link."""

    template: ClassVar[str] = "instant_sign_in"
    subject: ClassVar[str] = "Your sign-in link"
    link: LinkUrl
    valid_minutes: int
    practice: PracticeLabel | None = None


@dataclass(frozen=True, slots=True)
class PasswordReset(_Notice):
    """A team member's password reset link."""

    template: ClassVar[str] = "password_reset"
    subject: ClassVar[str] = "Reset your Confide password"
    link: LinkUrl
    valid_minutes: int


@dataclass(frozen=True, slots=True)
class Invitation(_Notice):
    """A new team member's invitation: choose a password. Team email: it names the
    practice (not health information for a member of its team)."""

    template: ClassVar[str] = "invitation"
    subject: ClassVar[str] = "You are invited to Confide"
    link: LinkUrl
    valid_days: int
    practice: PracticeLabel | None = None

    def subject_line(self) -> str:
        return f"{self.practice} invites you to Confide" if self.practice else self.subject


@dataclass(frozen=True, slots=True)
class AnnouncementAlert(_Notice):
    """AN1 for a client: the practice posted a new message in the portal. Not what it
    says, not who wrote it: a link to the portal's announcements (sign-in first)."""

    template: ClassVar[str] = "announcement"
    subject: ClassVar[str] = "You have a new message in your client portal"
    link: LinkUrl
    practice: PracticeLabel | None = None


Notice = Union[  # noqa: UP007
    ClientMessageAlert,
    MemberUnreadAlert,
    InstantSignIn,
    PasswordReset,
    Invitation,
    AnnouncementAlert,
]
NOTICE_TYPES: tuple[type[_Notice], ...] = (
    AnnouncementAlert,
    ClientMessageAlert,
    MemberUnreadAlert,
    InstantSignIn,
    PasswordReset,
    Invitation,
)
