"""TensorBoard summaries and a one-line progress format for the train loop.

Both are `log_fn(step, metrics)` callables, the hook `train.loop.train`
calls every `log_every` steps with the host metrics (loss, accuracy,
grad_norm, tokens, learning_rate, steps_per_sec, tokens_per_sec, mfu,
eta_sec) and after every eval with (eval_loss, eval_accuracy, eval_tokens).
`fan_out` combines several.

TensorFlow is imported only when a `SummaryWriter` is built, so importing
this module stays cheap. The scalars go through the low-level
`tf.summary.write` with the scalar plugin's metadata (what
`tf.summary.scalar` does), because `tf.summary.scalar` itself lives in the
tensorboard package, which is not a dependency; TensorBoard shows the files
as ordinary scalar curves. On a pod only process 0 writes; the other
processes get a writer that does nothing.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax

LogFn = Callable[[int, Mapping[str, Any]], None]

# Keys that are bookkeeping, not curves.
_SKIP = frozenset({"step"})


def tag_for(key: str) -> str:
  """TensorBoard tag of a metric key: eval_* -> 'eval/*', else 'train/*'."""
  if key.startswith("eval_"):
    return "eval/" + key[len("eval_") :]
  return "train/" + key


def scalar_items(metrics: Mapping[str, Any]) -> list[tuple[str, float]]:
  """(key, float) pairs of the metrics (except 'step'), sorted by key.

  Non-numeric values (strings, arrays with more than one element) raise:
  the loop only logs scalars, so anything else is a caller bug.
  """
  out = []
  for key in sorted(metrics):
    if key in _SKIP:
      continue
    value = metrics[key]
    try:
      out.append((key, float(value)))
    except (TypeError, ValueError) as e:
      raise TypeError(
        f"metric {key!r} = {value!r} is not a scalar number (summaries log "
        "scalars only)"
      ) from e
  return out


class SummaryWriter:
  """tf.summary event files under `logdir`, callable as log_fn(step, metrics).

  Example:
    writer = SummaryWriter(workdir / "tensorboard")
    loop.train(..., log_fn=fan_out(writer, ProgressPrinter(print)))
    writer.close()
  """

  def __init__(self, logdir: str | pathlib.Path, *, process_index: int | None = None):
    """Opens the writer (process 0 only).

    Args:
      logdir: a local path or a gs:// URL (tf.io handles both).
      process_index: defaults to jax.process_index(); non-zero -> no-op.
    """
    self.logdir = str(logdir)
    index = jax.process_index() if process_index is None else process_index
    self.active = index == 0
    self._writer = None
    if self.active:
      import tensorflow as tf

      # The writer is all TF does here: keep it off any accelerator.
      tf.config.set_visible_devices([], "GPU")
      from tensorflow.core.framework import summary_pb2

      self._tf = tf
      self._metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
      )
      self._writer = tf.summary.create_file_writer(self.logdir)

  def __call__(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Writes every scalar metric at `step` (tags from `tag_for`)."""
    if not self.active:
      return
    if self._writer is None:
      raise RuntimeError(f"SummaryWriter({self.logdir!r}) is closed")
    with self._writer.as_default(step=int(step)):
      for key, value in scalar_items(metrics):
        self._tf.summary.write(
          tag_for(key),
          self._tf.constant(value, self._tf.float32),
          metadata=self._metadata,
        )
    self._writer.flush()

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def format_duration(seconds: float) -> str:
  """Seconds -> '45s', '12m05s', '3h07m' ('?' when not finite)."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_progress(
  step: int, metrics: Mapping[str, Any], total_steps: int | None = None
) -> str:
  """One progress line: step, loss, steps/s, tokens/s, MFU, ETA.

  Train metrics give e.g.
    'step 200/1000 | loss 2.3457 | acc 0.412 | 3.21 steps/s | 12,345 tok/s |
     MFU 41.2% | ETA 4m09s'
  and eval metrics 'step 200/1000 | eval loss 2.1000 | eval acc 0.500'.
  Fields missing from `metrics` are left out.
  """
  head = f"step {step}" + (f"/{total_steps}" if total_steps else "")
  parts = [head]
  fields = (
    ("loss", "loss {:.4f}"),
    ("accuracy", "acc {:.3f}"),
    ("eval_loss", "eval loss {:.4f}"),
    ("eval_accuracy", "eval acc {:.3f}"),
    ("steps_per_sec", "{:.2f} steps/s"),
    ("tokens_per_sec", "{:,.0f} tok/s"),
  )
  for key, fmt in fields:
    if key in metrics:
      parts.append(fmt.format(float(metrics[key])))
  if "mfu" in metrics:
    parts.append(f"MFU {float(metrics['mfu']):.1%}")
  if "eta_sec" in metrics:
    parts.append(f"ETA {format_duration(float(metrics['eta_sec']))}")
  return " | ".join(parts)


class ProgressPrinter:
  """log_fn that prints `format_progress` lines through `log` (print, logging)."""

  def __init__(self, log: Callable[[str], Any], total_steps: int | None = None):
    self.log = log
    self.total_steps = total_steps

  def __call__(self, step: int, metrics: Mapping[str, Any]) -> None:
    self.log(format_progress(step, metrics, self.total_steps))


def fan_out(*fns: LogFn | None) -> LogFn:
  """One log_fn calling each of `fns` in order (None entries are skipped)."""
  live = [f for f in fns if f is not None]

  def log_fn(step: int, metrics: Mapping[str, Any]) -> None:
    for f in live:
      f(step, metrics)

  return log_fn
