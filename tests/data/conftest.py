"""Fixtures of the data tests: a small random world and its synthetic SIDs
(onesearch_jax/testing.py writes the world, so the tests control every
session)."""

from __future__ import annotations

import pathlib

import pytest

from onesearch_jax import testing
from onesearch_jax.data import tasks
from onesearch_jax.data.sid_table import SIDTable


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> pathlib.Path:
  return testing.write_small_world(tmp_path_factory.mktemp("data_world"))


@pytest.fixture(scope="session")
def small_table(small_world) -> SIDTable:
  return testing.synthetic_sid_table(small_world)


@pytest.fixture(scope="session")
def registered(small_world, small_table):
  return tasks.register_tasks(small_world, sid_table=small_table, prefix="test_small")
