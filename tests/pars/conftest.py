"""PARS fixtures: a hand-built three-item world and its SID table
(onesearch_jax/testing.py: hand_world, hand_table)."""

from __future__ import annotations

import pytest

from onesearch_jax import testing
from onesearch_jax.pars.logs import InteractionLog


@pytest.fixture()
def hand_log() -> InteractionLog:
  return InteractionLog.build(testing.hand_world(), testing.hand_table())


@pytest.fixture()
def world():
  return testing.hand_world()


@pytest.fixture()
def sid_table():
  return testing.hand_table()
