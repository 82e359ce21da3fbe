"""The one parser of client keys from header values (router/auth.py)."""

from __future__ import annotations

import pytest

from router.auth import bearer_key


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Basic abc", None),
        ("abc", None),
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER  abc ", "abc"),
    ],
)
def test_bearer_key(header, key):
    assert bearer_key(header) == key
