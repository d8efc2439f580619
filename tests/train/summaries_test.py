"""TensorBoard event files read back with the logged values; progress lines."""

from __future__ import annotations

import pytest

from onesearch_jax.train import summaries


def _read_events(logdir):
  """{tag: [(step, value), ...]} from every event file under logdir."""
  import tensorflow as tf

  out, plugins = {}, {}
  files = sorted(p for p in logdir.iterdir() if "tfevents" in p.name)
  assert files, f"no event file in {logdir}"
  for path in files:
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for v in event.summary.value:
        value = float(tf.make_ndarray(v.tensor))
        out.setdefault(v.tag, []).append((event.step, value))
        if v.metadata.plugin_data.plugin_name:
          plugins[v.tag] = v.metadata.plugin_data.plugin_name
  # TensorBoard files a tag under the plugin named in its first event.
  assert set(plugins) == set(out) and set(plugins.values()) == {"scalars"}, plugins
  return out


def test_event_file_holds_the_logged_scalars(tmp_path):
  writer = summaries.SummaryWriter(tmp_path, process_index=0)
  writer(10, {"step": 10, "loss": 2.5, "mfu": 0.25, "tokens_per_sec": 1234.0})
  writer(20, {"step": 20, "loss": 1.75, "mfu": 0.5, "tokens_per_sec": 4321.0})
  writer(20, {"step": 20, "eval_loss": 1.5, "eval_accuracy": 0.625})
  writer.close()
  events = _read_events(tmp_path)
  assert events["train/loss"] == [(10, 2.5), (20, 1.75)]
  assert events["train/mfu"] == [(10, 0.25), (20, 0.5)]
  assert events["train/tokens_per_sec"] == [(10, 1234.0), (20, 4321.0)]
  assert events["eval/loss"] == [(20, 1.5)]
  assert events["eval/accuracy"] == [(20, 0.625)]
  assert "train/step" not in events
  with pytest.raises(RuntimeError, match="closed"):
    writer(30, {"loss": 1.0})


def test_non_zero_process_writes_nothing(tmp_path):
  writer = summaries.SummaryWriter(tmp_path / "tb", process_index=1)
  writer(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "tb").exists()


def test_non_scalar_metric_is_refused_by_name(tmp_path):
  writer = summaries.SummaryWriter(tmp_path, process_index=0)
  with pytest.raises(TypeError, match="'note'"):
    writer(1, {"loss": 1.0, "note": "hello"})
  writer.close()


def test_progress_line_train_and_eval():
  line = summaries.format_progress(
    200,
    {
      "loss": 2.34567,
      "accuracy": 0.4123,
      "steps_per_sec": 3.214,
      "tokens_per_sec": 12345.4,
      "mfu": 0.4123,
      "eta_sec": 249.0,
    },
    total_steps=1000,
  )
  assert line == (
    "step 200/1000 | loss 2.3457 | acc 0.412 | 3.21 steps/s | 12,345 tok/s | "
    "MFU 41.2% | ETA 4m09s"
  )
  ev = summaries.format_progress(200, {"eval_loss": 2.1, "eval_accuracy": 0.5})
  assert ev == "step 200 | eval loss 2.1000 | eval acc 0.500"


@pytest.mark.parametrize(
  "seconds,text",
  [
    (0, "0s"),
    (59.4, "59s"),
    (60, "1m00s"),
    (3599, "59m59s"),
    (3600 * 3 + 420, "3h07m"),
  ],
)
def test_format_duration(seconds, text):
  assert summaries.format_duration(seconds) == text


def test_fan_out_calls_each_in_order():
  seen = []
  printer = summaries.ProgressPrinter(seen.append, total_steps=4)
  fn = summaries.fan_out(printer, None, lambda s, m: seen.append((s, dict(m))))
  fn(2, {"loss": 1.0})
  assert seen == ["step 2/4 | loss 1.0000", (2, {"loss": 1.0})]
