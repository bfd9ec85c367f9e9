"""NT1 made structural: an email template receives a `Notice`, whose fields can only be
links, the practice's name when the practice opted in, and numbers."""

import dataclasses
import typing

import pytest

from confide.domain.notices import (
    ALLOWED_FIELD_TYPES,
    NOTICE_TYPES,
    ClientMessageAlert,
    LinkUrl,
    MemberUnreadAlert,
    PracticeLabel,
)
from confide.jobs.mail import compose


def test_nt1_every_notice_field_has_an_allowed_type():
    for notice in NOTICE_TYPES:
        hints = typing.get_type_hints(notice)
        for f in dataclasses.fields(notice):
            args = typing.get_args(hints[f.name]) or (hints[f.name],)
            assert set(args) <= ALLOWED_FIELD_TYPES, (notice.__name__, f.name)
            assert str not in args


def test_nt1_a_notice_refuses_plain_text_where_a_link_belongs():
    with pytest.raises(TypeError):
        ClientMessageAlert(link="Alex Client: I feel worse", valid_hours=24)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MemberUnreadAlert(app=LinkUrl("https://x.test", "/"), minutes="ten")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("origin", "path", "token"),
    [
        ("https://x.test", "/l/m/", "has spaces"),
        ("https://x.test", "/Alex Client/", ""),
        ("javascript:alert(1)//", "/", ""),
        ("https://x.test", "/l/m/", "<script>"),
    ],
)
def test_nt1_links_hold_only_an_origin_a_fixed_path_and_a_token(origin, path, token):
    with pytest.raises(ValueError, match="link"):
        LinkUrl(origin, path, token)


def test_nt1_practice_name_only_when_the_practice_opted_in():
    assert PracticeLabel.if_allowed("Maple Street", name_practice=False) is None
    label = PracticeLabel.if_allowed("Maple Street", name_practice=True)
    notice = ClientMessageAlert(link=LinkUrl("https://x.test", "/l/m/", "abc"), valid_hours=24)
    assert notice.subject_line() == "You have a new secure message"
    named = dataclasses.replace(notice, practice=label)
    assert named.subject_line() == "You have a new secure message from Maple Street"


def test_nt1_email_has_text_and_html_parts_and_auto_submitted():
    notice = ClientMessageAlert(
        link=LinkUrl("https://x.test", "/l/m/", "abc_DEF-123"),
        valid_hours=24,
        practice=PracticeLabel("<b>Maple</b> & Co"),
    )
    msg = compose(notice, to="a@example.test", mail_from="Confide <n@x.test>", message_id="n-1")
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"] == "<n-1@x.test>"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "https://x.test/l/m/abc_DEF-123" in text.get_content()
    assert "&lt;b&gt;Maple&lt;/b&gt; &amp; Co" in html.get_content()  # MS4: escaped
