"""Shared test helpers: `require` skips on a user's machine but fails in CI (OMNIMODEL_REQUIRE_ALL=1)."""

from __future__ import annotations

import os

import pytest


def require(condition: bool, what: str) -> None:
    """Skip the test when `condition` is false, unless OMNIMODEL_REQUIRE_ALL=1, where it fails."""
    if condition:
        return
    if os.environ.get("OMNIMODEL_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but missing: {what}")
    pytest.skip(f"missing: {what}")
