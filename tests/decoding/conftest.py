"""Decoding tests: compile with few optimisations (tiny models, fast)."""

from __future__ import annotations

import pytest

from onesearch_jax import testing


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
  with testing.fast_compile():
    yield
