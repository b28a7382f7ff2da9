"""Where the next claim's walk over endpoints starts: after the last endpoint served."""

from __future__ import annotations

import pytest

from dispatcher.queue import walked_to


@pytest.mark.parametrize(
    ("cursor", "served", "expected"),
    [
        ("", ["ep_b", "ep_a"], "ep_b"),  # a walk from the start ends at its largest id
        ("ep_c", ["ep_d", "ep_f"], "ep_f"),  # no wrap: the largest id served
        # wrapped: past ep_c to the end (ep_d, ep_f), then from the start (ep_a, ep_b)
        ("ep_c", ["ep_d", "ep_f", "ep_a", "ep_b"], "ep_b"),
        ("ep_c", ["ep_c"], "ep_c"),  # the cursor's own endpoint comes last in a wrapped walk
    ],
)
def test_the_next_walk_starts_after_the_last_endpoint_served(
    cursor: str, served: list[str], expected: str
) -> None:
    assert walked_to(cursor, served) == expected
