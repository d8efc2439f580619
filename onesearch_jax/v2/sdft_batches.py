"""The paired batch of self-distillation: one dict, split into two batches.

The train loop's contract is one batch (a flat dict of arrays) per step, so a
self-distillation step gets the student batch (the model's batch contract,
``data/model_batches.py``: prompts without the keyword thoughts) with two
more features:

  teacher_encoder_input_tokens [B, L_T] int32  the same rows' prompts with
                                               the keyword segment
  teacher_loss_weights         [B, T] float32  the student's loss weights
                                               on rows that have a teacher
                                               prompt, 0 on the others

``split_pair`` gives (student, teacher): the teacher batch is the student
batch with those two in place of ``encoder_input_tokens`` and
``decoder_loss_weights`` (the same decoder tokens and long-seq features).

A row "has a teacher" when its teacher prompt differs from its student
prompt. Rows of a task without keywords (e.g. the indexing replay
``s1_title_to_sid`` in phase 3) carry their own prompt as teacher prompt, so
every row of a batch has the same features; their teacher weights are 0,
which keeps them out of L_KL and of the teacher CE (``v2/sdft.py``).

numpy / dict code only: imported by the data pipeline and the jitted step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

TEACHER_TOKENS = "teacher_encoder_input_tokens"
TEACHER_WEIGHTS = "teacher_loss_weights"
TEACHER_FEATURES = (TEACHER_TOKENS, TEACHER_WEIGHTS)


def pair_batch(student: Mapping[str, np.ndarray], teacher_tokens: np.ndarray) -> dict:
  """The paired batch of a student batch and its rows' teacher prompts.

  Args:
    student: a model batch (``encoder_input_tokens`` [B, L_S] padded with
      0 at the end, ``decoder_loss_weights`` [B, T], ...).
    teacher_tokens: [B, L_T] int teacher prompt ids, 0-padded at the end.

  Returns:
    ``student``'s features plus ``TEACHER_TOKENS`` and ``TEACHER_WEIGHTS``
    (module docstring).
  """
  s = np.asarray(student["encoder_input_tokens"])
  t = np.asarray(teacher_tokens, np.int32)
  if t.shape[0] != s.shape[0]:
    raise ValueError(f"pair_batch: {t.shape[0]} teacher rows for {s.shape[0]}")
  width = max(s.shape[1], t.shape[1])
  pad_s = np.pad(s, ((0, 0), (0, width - s.shape[1])))
  pad_t = np.pad(t, ((0, 0), (0, width - t.shape[1])))
  has_teacher = np.any(pad_s != pad_t, axis=1)
  weights = np.asarray(student["decoder_loss_weights"], np.float32)
  out = dict(student)
  out[TEACHER_TOKENS] = t
  out[TEACHER_WEIGHTS] = weights * has_teacher[:, None].astype(np.float32)
  return out


def split_pair(batch: Mapping[str, Any]) -> tuple[dict, dict]:
  """(student, teacher) model batches of a paired batch (numpy or jax).

  Raises:
    KeyError: ``batch`` is not a paired batch (names the missing feature).
  """
  missing = [k for k in TEACHER_FEATURES if k not in batch]
  if missing:
    raise KeyError(
      f"a self-distillation step needs a paired batch; missing {missing} "
      f"(has {sorted(batch)})"
    )
  student = {k: v for k, v in batch.items() if k not in TEACHER_FEATURES}
  teacher = dict(
    student,
    encoder_input_tokens=batch[TEACHER_TOKENS],
    decoder_loss_weights=batch[TEACHER_WEIGHTS],
  )
  return student, teacher


def is_paired(batch: Mapping[str, Any]) -> bool:
  """Whether ``batch`` carries the teacher features."""
  return TEACHER_TOKENS in batch
