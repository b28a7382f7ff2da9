"""One RFC 3339 type for every time a request carries: the delivery log's and replay's
`since`/`until` and a transition's `occurred_at` accept and refuse the same strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from api.schemas.common import NAIVE, Rfc3339
from api.schemas.deliveries import DeliveryListQuery, ReplayRequest
from api.schemas.platform import TransitionIn

READ = TypeAdapter(Rfc3339)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-11T08:42:13Z", datetime(2026, 5, 11, 8, 42, 13, tzinfo=UTC)),
        ("2026-05-11t08:42:13z", datetime(2026, 5, 11, 8, 42, 13, tzinfo=UTC)),
        ("2026-05-11T10:42:13.5+02:00", datetime(2026, 5, 11, 8, 42, 13, 500000, tzinfo=UTC)),
    ],
)
def test_accepted_and_read_as_utc(text: str, expected: datetime) -> None:
    value = READ.validate_python(text)
    assert value == expected and value.utcoffset() is not None and value.tzinfo == UTC


@pytest.mark.parametrize(
    "value",
    [
        1715417000,
        "1715417000",
        "2026-05-11",
        "2026-05-11 08:42:13Z",
        "11/05/2026",
        "2026-13-01T00:00:00Z",
    ],
)
def test_anything_else_is_refused(value: Any) -> None:
    with pytest.raises(ValidationError):
        READ.validate_python(value)


@pytest.mark.parametrize("model", [DeliveryListQuery, ReplayRequest])
def test_every_time_field_refuses_a_naive_time_in_the_same_words(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate({"since": "2026-05-11T08:42:13"})
    assert NAIVE in str(refused.value)
    with pytest.raises(ValidationError) as unix:
        model.model_validate({"until": 1715417000})
    assert "RFC 3339" in str(unix.value)


def test_occurred_at_refuses_a_naive_time_in_the_same_words() -> None:
    body = {"tenant_id": "ten_1", "environment": "sandbox", "status": "printed"}
    now = {"now": datetime(2026, 5, 11, tzinfo=UTC)}
    with pytest.raises(ValidationError) as refused:
        TransitionIn.model_validate({**body, "occurred_at": "2026-05-11T08:42:13"}, context=now)
    assert NAIVE in str(refused.value)
