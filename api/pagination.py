"""Stripe-style cursor pagination, shared by every list route.

A page is ``{"object": "list", "data": [...], "has_more": bool, "next_cursor": id|null}``;
the next page is asked for with ``?starting_after=<next_cursor>``. The cursor is an object
id, resolved by the caller to its sort key (e.g. ``(created_at, id)``), so pages stay
stable while new objects arrive. An id that resolves to nothing is a 422 on
``starting_after``: it is a bad parameter, not a missing resource at this URL.

Usage in a list route::

    query = page_query(request, PageQuery)   # or a subclass with filters
    after = await resolve_cursor(query, lambda i: store.cursor_of(conn, owner, i))
    rows = await store.list_things(conn, owner, limit=query.limit + 1, after=after)
    page = slice_page(rows, query.limit, lambda row: row.id)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.responses import field_errors
from dispatcher.errors import FieldError, ValidationFailed

DEFAULT_LIMIT = 20
MAX_LIMIT = 100

T = TypeVar("T")
C = TypeVar("C")


class PageQuery(BaseModel):
    """Query parameters of a list; subclass it to add filters (they get documented too)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size, 1 to 100."
    )
    starting_after: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The `next_cursor` of the previous page (an object id).",
    )


Q = TypeVar("Q", bound=BaseModel)


class ListPage(BaseModel, Generic[T]):
    """The list envelope; subclass it per item type so the OpenAPI name reads well."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None = Field(
        default=None, description="Pass as `starting_after` to get the next page."
    )


def page_query(request: web.Request, model: type[Q]) -> Q:
    """The validated query string (of a list, or any other route's query model); every bad
    parameter is reported in one 422."""
    given = dict(request.query)
    # PostgreSQL text cannot hold NUL, and no id or filter of ours contains one
    errors = [
        FieldError(k, "must not contain NUL characters") for k, v in given.items() if "\x00" in v
    ]
    try:
        parsed = model.model_validate(given)
    except ValidationError as exc:
        errors += field_errors(exc)
    if errors:
        raise ValidationFailed(errors)
    return parsed


async def resolve_cursor(
    query: PageQuery, lookup: Callable[[str], Awaitable[C | None]]
) -> C | None:
    """The sort key of `starting_after`, or None for the first page."""
    if query.starting_after is None:
        return None
    found = await lookup(query.starting_after)
    if found is None:
        raise ValidationFailed(
            [FieldError("starting_after", "no such object; use the next_cursor of a page")]
        )
    return found


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
    next_cursor: str | None


def slice_page(rows: Sequence[T], limit: int, id_of: Callable[[T], str]) -> Page[T]:
    """Cut a `limit + 1` fetch down to a page: the extra row only proves there is more."""
    items = list(rows[:limit])
    has_more = len(rows) > limit
    return Page(items, has_more, id_of(items[-1]) if has_more and items else None)
