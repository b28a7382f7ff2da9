"""The mailing status machine (SPEC section 4) and the event-type catalog it implies.

Pure: ``decide`` sees only the stored status, the reported one and the mail type, so the
route, the batch endpoint and the transactional outbox all refuse the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final


class MailingStatus(StrEnum):
    CREATED = "created"
    PAID = "paid"
    QUEUED = "queued"
    PRINTED = "printed"
    HANDED_OVER = "handed_over"
    IN_DELIVERY = "in_delivery"
    DELIVERED = "delivered"
    RETURN_RECEIPT = "return_receipt"
    FAILED = "failed"


class MailType(StrEnum):
    STANDARD = "standard"
    REGISTERED = "registered"


# The forward path; a transition may skip ahead along it, never go back.
FORWARD_ORDER: Final[tuple[MailingStatus, ...]] = (
    MailingStatus.CREATED,
    MailingStatus.PAID,
    MailingStatus.QUEUED,
    MailingStatus.PRINTED,
    MailingStatus.HANDED_OVER,
    MailingStatus.IN_DELIVERY,
    MailingStatus.DELIVERED,
    MailingStatus.RETURN_RECEIPT,
)
_RANK: Final[dict[MailingStatus, int]] = {s: i for i, s in enumerate(FORWARD_ORDER)}
TERMINAL_STATUSES: Final[frozenset[MailingStatus]] = frozenset(
    {MailingStatus.FAILED, MailingStatus.RETURN_RECEIPT}
)


@dataclass(frozen=True)
class Accept:
    """Record the transition and emit one new event."""

    word: ClassVar[str] = "accepted"  # the verdict as the API says it


@dataclass(frozen=True)
class Repeat:
    """Same status again: answer with the original event, emit nothing (idempotent)."""

    word: ClassVar[str] = "repeated"


@dataclass(frozen=True)
class Refuse:
    """Backward or impossible: a 409 whose message names the current status."""

    word: ClassVar[str] = "refused"
    reason: str


Decision = Accept | Repeat | Refuse


def decide(current: MailingStatus | None, new: MailingStatus, mail_type: MailType) -> Decision:
    """Judge one reported transition against the mailing's stored status.

    ``current`` is None for a mailing never seen before. Its first transition may start
    anywhere on the path (the platform may report late, or start tracking mid-way), or be
    ``failed``; but never ``return_receipt``, which needs a recorded ``delivered``.
    ``mail_type`` is the mailing's type as the caller knows it (stored or reported).
    """
    if current is None:
        if new == MailingStatus.RETURN_RECEIPT:
            return Refuse("mailing is unknown; 'return_receipt' requires 'delivered' first")
        return Accept()
    if new == current:
        return Repeat()
    if current in TERMINAL_STATUSES:
        return Refuse(f"mailing is '{current}', a final status; cannot go to '{new}'")
    if new == MailingStatus.RETURN_RECEIPT:
        return _decide_return_receipt(current, mail_type)
    if new == MailingStatus.FAILED:
        if current == MailingStatus.DELIVERED:
            return Refuse("mailing is 'delivered'; cannot go to 'failed'")
        return Accept()
    if _RANK[new] > _RANK[current]:
        return Accept()
    return Refuse(f"mailing is '{current}'; cannot go back to '{new}'")


def _decide_return_receipt(current: MailingStatus, mail_type: MailType) -> Decision:
    if current != MailingStatus.DELIVERED:
        return Refuse(f"mailing is '{current}'; 'return_receipt' requires 'delivered' first")
    if mail_type != MailType.REGISTERED:
        return Refuse(
            f"mailing is 'delivered' but '{mail_type}' mail has no return receipt; "
            "'return_receipt' is for registered mail only"
        )
    return Accept()


EVENT_PREFIX: Final = "mailing."
# Sent only by POST /v1/webhooks/{id}/test, straight to that one endpoint (never fanned
# out, no transition emits it). Known so endpoints may name it and receivers see it listed.
TEST_EVENT_TYPE: Final = "webhook.test"


def event_type_for(status: MailingStatus) -> str:
    return EVENT_PREFIX + status.value


MAILING_EVENT_TYPES: Final[tuple[str, ...]] = tuple(event_type_for(s) for s in MailingStatus)
EVENT_TYPES: Final[tuple[str, ...]] = (*MAILING_EVENT_TYPES, TEST_EVENT_TYPE)

_DESCRIPTIONS: Final[dict[str, str]] = {
    "mailing.created": "The mailing was created through the API.",
    "mailing.paid": "Payment for the mailing was captured.",
    "mailing.queued": "The mailing is queued for printing.",
    "mailing.printed": "The mailing was printed in the print centre.",
    "mailing.handed_over": "The mailing was handed over to the postal carrier.",
    "mailing.in_delivery": "The mailing is on the postman's round.",
    "mailing.delivered": "The mailing was delivered to the recipient.",
    "mailing.return_receipt": "The return receipt was signed (registered mail only).",
    "mailing.failed": "Delivery failed (notice left, refused, returned to sender).",
    TEST_EVENT_TYPE: "A test event sent on demand to one endpoint; never from a mailing.",
}

# For GET /v1/event-types. Treat as read-only: it is shared by every request.
EVENT_TYPE_CATALOG: Final[list[dict[str, str]]] = [
    {"name": name, "description": _DESCRIPTIONS[name]} for name in EVENT_TYPES
]

WILDCARD_PATTERNS: Final[tuple[str, ...]] = ("*", EVENT_PREFIX + "*")


def event_type_matches(pattern: str, event_type: str) -> bool:
    """Subscription match: ``*`` (everything), ``<prefix>.*`` (one family) or exact."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def valid_event_pattern(pattern: str) -> bool:
    """What an endpoint may subscribe to; a typo must fail at registration, not go silent."""
    return pattern in WILDCARD_PATTERNS or pattern in EVENT_TYPES
