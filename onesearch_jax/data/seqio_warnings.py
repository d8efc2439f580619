"""Drops seqio's "uncached FunctionDataset" warning, and only that one.

seqio logs (through absl, logger "absl") a five-line warning every time a
``FunctionDataSource`` task is read shuffled: "Using an uncached
FunctionDataset for training is not recommended ...". Every task of
``tasks.py`` is such a source (examples built in memory from the world and
shuffled with an explicit seed), and the trainers build datasets often, so the
warning floods the main job's output without telling anything new.

``install()`` (called by ``tasks.register_tasks``, where the tasks come into
use) adds ``UncachedFunctionDatasetFilter`` to the absl logger once; every
other record, warnings included, passes untouched.
"""

from __future__ import annotations

import logging

from absl import logging as absl_logging

# The start of seqio's message (seqio/dataset_providers.py,
# FunctionDataSource.get_dataset).
MESSAGE_PREFIX = "Using an uncached FunctionDataset for training"


class UncachedFunctionDatasetFilter(logging.Filter):
  """A logging filter that rejects seqio's uncached-FunctionDataset warning."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno != logging.WARNING:
      return True
    try:
      message = record.getMessage()
    except (TypeError, ValueError):  # a malformed record is not ours to drop
      return True
    return not message.startswith(MESSAGE_PREFIX)


def install() -> UncachedFunctionDatasetFilter:
  """Adds the filter to the absl logger (idempotent); returns the filter."""
  logger = absl_logging.get_absl_logger()
  for f in logger.filters:
    if isinstance(f, UncachedFunctionDatasetFilter):
      return f
  f = UncachedFunctionDatasetFilter()
  logger.addFilter(f)
  return f
