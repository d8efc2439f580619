"""Reading a finished (or running) SFT output directory, for evaluation.

``read_config(out_dir)`` / ``read_model_config(out_dir)`` give the run's
SFTConfig and derived ModelConfig; ``load_trained(out_dir)`` the phase-3
model, vocabulary and ModelConfig on one device; ``eval_inputs(out_dir,
kind, batch_size)`` the encoder inputs with per-row session metadata.
A phase is finished when ``out_dir/phase{k}/result.json`` (``RESULT``) exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

from onesearch_jax import config_io
from onesearch_jax import sharding as sh
from onesearch_jax.data import eval_batches, model_batches
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.train import checkpoints, state
from onesearch_jax.train.sft_config import PHASES, SFTConfig, config_from_dict

RESULT = "result.json"
# Phase 3's steps as made from SFTConfig.phase3_passes (written by run_sft).
PHASE_STEPS = "phase_steps.json"


def read_config(out_dir: str | pathlib.Path) -> SFTConfig:
  """The SFTConfig a run in out_dir used, phase 3's steps filled in when they
  were made from ``phase3_passes`` (``out_dir/phase_steps.json``)."""
  path = pathlib.Path(out_dir) / "sft_config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: missing (not a training output directory?)")
  cfg = config_from_dict(json.loads(path.read_text()))
  if cfg.steps[2] == 0:
    steps_path = pathlib.Path(out_dir) / PHASE_STEPS
    if not steps_path.exists():
      raise FileNotFoundError(
        f"{steps_path}: missing; {path} makes phase 3's steps from "
        f"phase3_passes {cfg.phase3_passes}, and the run had not registered "
        "its tasks yet"
      )
    try:
      steps = tuple(int(n) for n in json.loads(steps_path.read_text())["steps"])
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"{steps_path}: no 'steps' list of 3 ints ({e})") from e
    if len(steps) != 3 or steps[:2] != cfg.steps[:2] or steps[2] <= 0:
      raise ValueError(f"{steps_path}: steps {steps} do not fit {path}'s {cfg.steps}")
    cfg = dataclasses.replace(cfg, steps=steps)
  return cfg


def read_model_config(out_dir: str | os.PathLike) -> ModelConfig:
  """The ModelConfig a training run derived (``out_dir/model_config.json``)."""
  path = pathlib.Path(out_dir) / "model_config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: missing (not a training output directory?)")
  raw = json.loads(path.read_text())
  return config_io.from_dict(ModelConfig, raw)


def load_trained(
  out_dir: str | pathlib.Path, phase: str = "phase3"
) -> tuple[EncoderDecoder, vocab_lib.OneSearchVocabulary, ModelConfig]:
  """The trained model of a finished phase, on one device.

  Args:
    out_dir: a ``run_sft`` output directory.
    phase: which phase's final parameters (default: the last).

  Returns:
    (model with the phase's final parameters, the vocabulary, the ModelConfig).

  Raises:
    FileNotFoundError: the phase did not finish.
  """
  out_dir = pathlib.Path(out_dir)
  if phase not in PHASES:
    raise ValueError(f"phase {phase!r} not in {PHASES}")
  if not (out_dir / phase / RESULT).exists():
    old = (out_dir / "stage3").is_dir()  # SFT phases were called stages
    raise FileNotFoundError(
      f"{out_dir / phase}: the phase has not finished"
      + (" (an older run's stage1..3 directories: retrain)" if old else "")
    )
  cfg = read_config(out_dir)
  model_cfg = read_model_config(out_dir)
  spec = model_batches.read_spec(out_dir)
  vocabulary = vocab_lib.OneSearchVocabulary.load(spec.vocab_dir)
  mesh = sh.single_device_mesh()
  k = PHASES.index(phase)
  opt = cfg.phase_train_config(k).optimizer
  ts = state.create_train_state(
    model_cfg, opt, mesh, sh.DP_RULES, seed=0, initialise=False
  )
  ckpt = checkpoints.Checkpointer(out_dir / phase / "checkpoints")
  try:
    # Exactly the phase's final step: a damaged final checkpoint is an
    # error here, never a silent fallback to an earlier step.
    ts, _ = ckpt.restore(ts, step=cfg.steps[k])
  finally:
    ckpt.close()
  model, _ = ts.merge()
  return model, vocabulary, model_cfg


def eval_inputs(
  source: str | pathlib.Path | Any,
  kind: str = "eval_click",
  batch_size: int = 64,
  **kw,
) -> Iterator[tuple[dict, list[dict]]]:
  """Encoder inputs + per-row metadata of an eval task (file order).

  Args:
    source: a ``run_sft`` output directory (its tasks are re-registered with
      the saved vocabulary; the encoder length is the run's phase-3 one) or a
      ``tasks.RegisteredTasks``.
    kind: "eval_click" or "eval_order".
    batch_size: rows per batch.
    **kw: ``data.eval_batches.eval_inputs`` options (inputs_length,
      long_seq, shard_info, pad_last).

  Returns:
    Iterator of (batch, metas); see ``data.eval_batches.eval_inputs``.
  """
  if isinstance(source, str | pathlib.Path):
    spec = model_batches.read_spec(source)
    registered = model_batches.register_from_spec(spec)
    kw.setdefault("inputs_length", spec.eval_inputs_length)
    kw.setdefault("long_seq", read_config(source).museq.use_long_seq)
  else:
    registered = source
  return eval_batches.eval_inputs(registered, kind, batch_size, **kw)
