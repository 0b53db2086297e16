"""Headers that every mail client reads back as written: Korean, emoji, long, hostile."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.errors import AddressInvalid, MailSettingsError
from digest.mail.message import POLICY, fold_address, header_text, mail_settings, subject_line
from digest.subscribers.store import normalize_address

HANGUL = st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3)
ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
EMOJI = st.sampled_from("😀🚀🧠📚✨🇰🇷👩‍💻")
WORD = st.text(alphabet=st.one_of(HANGUL, ASCII, EMOJI), min_size=1, max_size=14)
SUBJECTS = st.lists(WORD, min_size=1, max_size=14).map(" ".join)
NAMES = st.lists(st.text(alphabet=st.one_of(HANGUL, ASCII, EMOJI), min_size=1, max_size=6),
                 min_size=1, max_size=3).map(" ".join)


def lines_of(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n")


def raw_value(raw: bytes, name: bytes) -> str:
    """The header's value as it travels, unfolded (CRLF removed, whitespace kept: RFC 5322 2.2.3)."""
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    start = head.index(name + b": ") + len(name) + 2
    end = start
    while True:
        end = head.index(b"\r\n", end)
        if head[end + 2:end + 3] not in (b" ", b"\t"):
            break
        end += 2
    return head[start:end].replace(b"\r\n", b"").decode("ascii")


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SUBJECTS)
def test_subjects_fold_short_and_decode_back_with_both_decoders(subject):
    if "=?" not in subject:  # assigned to a message, text that looks encoded is decoded by the email package
        message = EmailMessage(policy=POLICY)
        message["Subject"] = subject
        raw = message.as_bytes()
        assert all(len(line) <= 78 for line in lines_of(raw)), raw
        assert b"?==?" not in raw
        assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject
        assert str(make_header(decode_header(raw_value(raw, b"Subject")))) == subject
    sent = subject_line(subject) + b"\r\n"  # what each message carries
    assert all(len(line) <= 78 for line in lines_of(sent)) and b"?==?" not in sent
    assert email.message_from_bytes(sent, policy=email.policy.default)["Subject"] == subject
    assert str(make_header(decode_header(raw_value(sent, b"Subject")))) == subject


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NAMES)
def test_display_names_fold_short_and_decode_back_with_both_decoders(name):
    address = "digest@example.org"
    try:
        folded = fold_address("From", name, address).encode()
    except MailSettingsError:  # longer than one encoded word: refused, never sent garbled
        assert len(name.encode()) > 40
        return
    raw = folded + b"\r\nbody\r\n"
    assert all(len(line) <= 78 for line in lines_of(raw)), raw
    assert b"?==?" not in raw
    parsed = email.message_from_bytes(raw, policy=email.policy.default)["From"].addresses[0]
    assert (parsed.display_name, parsed.addr_spec) == (name, address)
    decoded = str(make_header(decode_header(raw_value(raw, b"From"))))
    quoted = name.isascii() and "=?" not in name  # an ASCII name that looks encoded is sent encoded
    expected = email.utils.formataddr((name, address)) if quoted else f"{name} <{address}>"
    assert decoded == expected


@pytest.mark.parametrize("subject", ["=?utf-8?q?looks_encoded?=", "x" * 120, "plain ASCII subject, short words"])
def test_ascii_subjects_that_look_encoded_or_cannot_fold_still_decode_back(subject):
    raw = subject_line(subject) + b"\r\n"
    assert all(len(line) <= 78 for line in lines_of(raw))
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject
    assert str(make_header(decode_header(raw_value(raw, b"Subject")))) == subject


def test_the_policy_folds_display_names_of_address_headers():
    message = EmailMessage(policy=POLICY)
    message["From"] = "ML 읽기 노트 <digest@example.org>"
    raw = message.as_bytes()
    assert raw.startswith(b"From: =?utf-8?b?")
    assert email.message_from_bytes(raw, policy=email.policy.default)["From"].addresses[0].display_name == \
        "ML 읽기 노트"


def test_a_display_name_too_long_for_one_encoded_word_is_refused_with_a_reason():
    with pytest.raises(MailSettingsError, match="too long"):
        fold_address("From", "아주 긴 이름을 가진 머신러닝 읽기 노트 주간 다이제스트 편집부", "a@example.org")
    with pytest.raises(MailSettingsError, match="too long"):
        mail_settings({"DIGEST_FROM": "아주 긴 이름을 가진 머신러닝 읽기 노트 주간 다이제스트 편집부 <a@example.org>"})


@pytest.mark.parametrize("text, expected", [
    ("제목\r\nBcc: victim@example.org", "제목 Bcc: victim@example.org"),
    ("line\nbreak\u2028and\u0085more\ttabs\x00", "line break and more tabs"),
    ("  spaces   inside  ", "spaces inside"),
])
def test_header_text_makes_one_line_so_nothing_can_start_a_header(text, expected):
    assert header_text(text) == expected


def test_header_text_cuts_a_huge_value():
    assert len(header_text("가" * 1_000_000)) == 300


def test_a_subject_with_an_injection_attempt_stays_one_header():
    message = EmailMessage(policy=POLICY)
    message["Subject"] = header_text("안녕\r\nBcc: victim@example.org\r\n\r\nbody")
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Bcc"] is None and "Bcc: victim" in parsed["Subject"]


@pytest.mark.parametrize("address", [
    "victim@example.org\r\nBcc: other@example.org",
    "victim@example.org\nRCPT TO:<other@example.org>",
    "Name <victim@example.org>",
    "victim@example.org, other@example.org",
    '"quoted"@example.org',
    "no-at-sign",
    "a@b",
    "한글@example.org",  # SMTPUTF8 local parts: refused rather than mangled
    "a" * 250 + "@example.org",
    "",
])
def test_addresses_that_could_inject_or_cannot_be_sent_are_refused(address):
    with pytest.raises(AddressInvalid) as caught:
        normalize_address(address)
    assert "victim" not in str(caught.value)  # errors never repeat the address


def test_idn_domains_are_kept_as_punycode_for_smtp():
    assert normalize_address("reader@한국.kr") == "reader@xn--3e0b707e.kr"
    assert normalize_address(" Reader@Example.ORG ") == "Reader@example.org"


@pytest.mark.parametrize("name, value", [
    ("DIGEST_FROM", "ML <digest@example.org>\r\nBcc: victim@example.org"),
    ("DIGEST_FROM", "digest@example.org\nBcc: victim@example.org"),
    ("DIGEST_SERVICE_URL", "https://subscribe.example.org/\r\nBcc: victim@example.org"),
    ("DIGEST_SITE_URL", "https://notes.example.org/ x"),
    ("DIGEST_SERVICE_URL", "javascript:alert(1)"),
    ("DIGEST_UNSUBSCRIBE_MAILTO", "u@example.org\r\nBcc: victim@example.org"),
])
def test_settings_that_could_inject_a_header_are_refused(name, value):
    with pytest.raises((MailSettingsError, AddressInvalid)) as caught:
        mail_settings({"DIGEST_FROM": "ML <digest@example.org>", name: value})
    assert "\n" not in str(caught.value)


def test_a_list_id_must_be_a_dot_atom():
    with pytest.raises(MailSettingsError, match="must look like weekly.example.org"):
        mail_settings({"DIGEST_LIST_ID": "weekly.example.org\r\nBcc: victim@example.org"})
    assert mail_settings({"DIGEST_LIST_ID": "weekly.example.org"}).list_address == "weekly.example.org"


ENCODED_WORD = re.compile(rb"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
PUNCTUATION = st.sampled_from(" .,:;!?-_()[]<>\"'@#%&*+/=~|·…「」")
MIXED = st.text(alphabet=st.one_of(HANGUL, st.characters(min_codepoint=0x41, max_codepoint=0x7A),
                                    st.characters(min_codepoint=0x30, max_codepoint=0x39), EMOJI, PUNCTUATION),
                min_size=1, max_size=200).map(header_text).filter(bool)


def decodes_back(sent: bytes, name: bytes) -> tuple[str, str]:
    """What Python's two parsers read from the header: the modern policy's, and decode_header's."""
    modern = str(email.message_from_bytes(sent, policy=email.policy.default)[name.decode()])
    legacy = str(make_header(decode_header(raw_value(sent, name))))
    return modern, legacy


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MIXED)
def test_every_encoded_word_of_a_subject_is_at_most_75_characters_and_decodes_back(subject):
    sent = subject_line(subject) + b"\r\n"
    assert all(len(word) <= 75 for word in ENCODED_WORD.findall(sent)), sent
    assert all(len(line) <= 78 for line in lines_of(sent)), sent
    assert decodes_back(sent, b"Subject") == (subject, subject)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet=ASCII, min_size=1, max_size=70), min_size=1, max_size=6).map(" ".join))
def test_an_ascii_subject_never_folds_before_its_first_word(subject):
    sent = subject_line(subject) + b"\r\n"
    assert not sent.startswith(b"Subject:\r\n")
    assert decodes_back(sent, b"Subject") == (subject, subject)  # no leading space from a fold


@pytest.mark.parametrize("name", ["=?utf-8?q?Admin?=", "Team =?utf-8?b?7ZWc?= weekly"])
def test_an_ascii_display_name_that_looks_encoded_is_sent_encoded_so_it_reads_as_written(name):
    sent = fold_address("From", name, "digest@example.org").encode() + b"\r\nbody\r\n"
    assert b'"' not in sent.split(b"\r\n")[0]  # not a quoted string that readers decode anyway
    parsed = email.message_from_bytes(sent, policy=email.policy.default)["From"].addresses[0]
    assert parsed.display_name == name
    assert str(make_header(decode_header(raw_value(sent, b"From")))) == f"{name} <digest@example.org>"


@pytest.mark.parametrize("value, blamed", [
    ("Team: Alice <digest@example.org>", "':' at position 5"),
    ("ML Bcc: x@evil.example.com <digest@example.org>", "':' at position 7"),
    ("Alice <digest@example.org>, Bob <bob@example.org>", "',' at position 27"),
    ("ML 읽기 노트 <digest@example.org>\x0bBcc: x@evil.example.com", "vertical tab"),
    ("ML <digest@example.org", "'<' at position 4"),
])
def test_a_from_setting_that_is_not_exactly_one_mailbox_is_refused_blaming_the_character(value, blamed):
    with pytest.raises(MailSettingsError) as refused:
        mail_settings({"DIGEST_FROM": value})
    assert blamed in str(refused.value) and "x@evil" not in str(refused.value)


@pytest.mark.parametrize("value, name, address", [
    ("ML 읽기 노트 <digest@example.org>", "ML 읽기 노트", "digest@example.org"),
    ('"Team: Alice" <digest@example.org>', "Team: Alice", "digest@example.org"),
    ("digest@example.org", "", "digest@example.org"),
])
def test_a_from_setting_of_one_mailbox_is_read_exactly(value, name, address):
    settings_ = mail_settings({"DIGEST_FROM": value})
    assert (settings_.sender_name, settings_.sender) == (name, address)
