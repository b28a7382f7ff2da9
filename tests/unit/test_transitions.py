"""The status machine against an explicit, hand-written table of every case."""

from __future__ import annotations

import pytest

from dispatcher.transitions import (
    EVENT_TYPE_CATALOG,
    EVENT_TYPES,
    Accept,
    MailingStatus,
    MailType,
    Refuse,
    Repeat,
    decide,
    event_type_for,
    event_type_matches,
    valid_event_pattern,
)

# Rows: current status ("-" = unknown mailing). Columns: the new status.
# A = accept, = = repeat (idempotent), x = refuse.
COLUMNS = "created paid queued printed handed_over in_delivery delivered return_receipt failed"
STANDARD = """
-               A A A A A A A x A
created         = A A A A A A x A
paid            x = A A A A A x A
queued          x x = A A A A x A
printed         x x x = A A A x A
handed_over     x x x x = A A x A
in_delivery     x x x x x = A x A
delivered       x x x x x x = x x
return_receipt  x x x x x x x = x
failed          x x x x x x x x =
"""
REGISTERED = """
-               A A A A A A A x A
created         = A A A A A A x A
paid            x = A A A A A x A
queued          x x = A A A A x A
printed         x x x = A A A x A
handed_over     x x x x = A A x A
in_delivery     x x x x x = A x A
delivered       x x x x x x = A x
return_receipt  x x x x x x x = x
failed          x x x x x x x x =
"""


def _cases() -> list[tuple[MailingStatus | None, MailingStatus, MailType, str]]:
    cases = []
    for mail_type, grid in ((MailType.STANDARD, STANDARD), (MailType.REGISTERED, REGISTERED)):
        for line in grid.strip().splitlines():
            row, *cells = line.split()
            current = None if row == "-" else MailingStatus(row)
            for new, cell in zip(COLUMNS.split(), cells, strict=True):
                cases.append((current, MailingStatus(new), mail_type, cell))
    return cases


CASES = _cases()


def test_table_covers_every_combination() -> None:
    assert len(CASES) == (len(MailingStatus) + 1) * len(MailingStatus) * len(MailType)
    assert len({c[:3] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("current", "new", "mail_type", "expected"), CASES)
def test_decision_matrix(
    current: MailingStatus | None, new: MailingStatus, mail_type: MailType, expected: str
) -> None:
    decision = decide(current, new, mail_type)
    if expected == "A":
        assert decision == Accept()
    elif expected == "=":
        assert decision == Repeat()
    else:
        assert isinstance(decision, Refuse)
        named = "unknown" if current is None else f"'{current}'"
        assert named in decision.reason
        assert f"'{new}'" in decision.reason


def test_refusal_messages_read_well() -> None:
    assert decide(MailingStatus.DELIVERED, MailingStatus.PRINTED, MailType.STANDARD) == Refuse(
        "mailing is 'delivered'; cannot go back to 'printed'"
    )
    refused = decide(MailingStatus.DELIVERED, MailingStatus.RETURN_RECEIPT, MailType.STANDARD)
    assert isinstance(refused, Refuse)
    assert "registered" in refused.reason
    refused = decide(MailingStatus.FAILED, MailingStatus.DELIVERED, MailType.REGISTERED)
    assert isinstance(refused, Refuse)
    assert "final" in refused.reason


def test_plain_strings_behave_like_members() -> None:
    assert decide("printed", "printed", "standard") == Repeat()  # type: ignore[arg-type]
    assert decide("paid", "printed", "standard") == Accept()  # type: ignore[arg-type]


def test_decisions_are_frozen_values() -> None:
    assert Accept() == Accept()
    assert hash(Refuse("x")) == hash(Refuse("x"))
    with pytest.raises(AttributeError):
        Refuse("x").reason = "y"  # type: ignore[misc]


# -- event types --------------------------------------------------------------------------------


def test_event_types() -> None:
    assert event_type_for(MailingStatus.HANDED_OVER) == "mailing.handed_over"
    assert EVENT_TYPES == (
        "mailing.created", "mailing.paid", "mailing.queued", "mailing.printed",
        "mailing.handed_over", "mailing.in_delivery", "mailing.delivered",
        "mailing.return_receipt", "mailing.failed", "webhook.test",
    )  # fmt: skip


def test_catalog_describes_every_type_once() -> None:
    assert [entry["name"] for entry in EVENT_TYPE_CATALOG] == list(EVENT_TYPES)
    for entry in EVENT_TYPE_CATALOG:
        assert set(entry) == {"name", "description"}
        assert entry["description"].endswith(".")
        assert "\n" not in entry["description"]


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("*", "mailing.delivered", True),
        ("*", "webhook.test", True),
        ("mailing.*", "mailing.delivered", True),
        ("mailing.*", "mailing.return_receipt", True),
        ("mailing.*", "webhook.test", False),
        ("mailing.*", "mailingx.delivered", False),
        ("mailing.delivered", "mailing.delivered", True),
        ("mailing.delivered", "mailing.delivered_late", False),
        ("mailing.delivered", "mailing.failed", False),
        ("mailing.deliver*", "mailing.delivered", False),
        ("Mailing.delivered", "mailing.delivered", False),
        ("", "mailing.delivered", False),
    ],
)
def test_event_type_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert event_type_matches(pattern, event_type) is expected


@pytest.mark.parametrize("pattern", ["*", "mailing.*", *EVENT_TYPES])
def test_valid_patterns(pattern: str) -> None:
    assert valid_event_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    ["", "**", "mailing", "mailing.", "mailing.**", "mailing.shipped", "MAILING.CREATED",
     "mailing.delivered ", "webhook.*", "document.sent", "*.delivered"],
)  # fmt: skip
def test_invalid_patterns(pattern: str) -> None:
    assert not valid_event_pattern(pattern)
