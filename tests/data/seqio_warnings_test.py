"""seqio_warnings: seqio's uncached-FunctionDataset warning is dropped, only it."""

from __future__ import annotations

import logging

import pytest
import seqio
import tensorflow as tf
from absl import logging as absl_logging

from onesearch_jax.data import seqio_warnings


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.DEBUG)
    self.messages: list[str] = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture
def absl_records():
  """The absl logger's records, with the filter removed before and after."""
  logger = absl_logging.get_absl_logger()
  saved = list(logger.filters)
  for f in saved:
    if isinstance(f, seqio_warnings.UncachedFunctionDatasetFilter):
      logger.removeFilter(f)
  handler = _Records()
  logger.addHandler(handler)
  yield handler.messages
  logger.removeHandler(handler)
  for f in list(logger.filters):
    logger.removeFilter(f)
  for f in saved:
    logger.addFilter(f)


def _read_shuffled_function_source():
  """What seqio does when a FunctionDataSource task is read for training."""
  source = seqio.FunctionDataSource(
    lambda split, shuffle_files, seed=None: tf.data.Dataset.range(3),
    splits=["train"],
  )
  source.get_dataset("train", shuffle=True, seed=0)


def _uncached(messages):
  return [m for m in messages if "uncached FunctionDataset" in m]


def test_drops_seqio_uncached_warning_keeps_other_warnings(absl_records):
  _read_shuffled_function_source()
  assert len(_uncached(absl_records)) == 1  # seqio does warn without the filter
  assert _uncached(absl_records)[0].startswith(seqio_warnings.MESSAGE_PREFIX)
  absl_records.clear()
  first = seqio_warnings.install()
  assert seqio_warnings.install() is first  # idempotent
  assert absl_logging.get_absl_logger().filters.count(first) == 1
  _read_shuffled_function_source()
  absl_logging.warning("other warning %d", 7)
  absl_logging.error("Using an uncached FunctionDataset for training (as an error)")
  assert absl_records == [
    "other warning 7",
    "Using an uncached FunctionDataset for training (as an error)",
  ]


def test_filter_decides_per_record():
  f = seqio_warnings.UncachedFunctionDatasetFilter()

  def record(level, msg, *args):
    return logging.LogRecord("absl", level, "x.py", 1, msg, args, None)

  assert not f.filter(record(logging.WARNING, seqio_warnings.MESSAGE_PREFIX + " ..."))
  assert f.filter(record(logging.WARNING, "Using a cached dataset"))
  assert f.filter(record(logging.INFO, seqio_warnings.MESSAGE_PREFIX))
  assert f.filter(record(logging.WARNING, "%s %s", "only one arg"))  # malformed
