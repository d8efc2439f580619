"""Synthetic batches in the model's batch contract (tests, benchmarks, smoke runs).

Targets are SID sequences `<a><b><c><d><d'>` + EOS drawn from the
configured `sid_ranges`, so the SID level restriction applies to them.
"""

from __future__ import annotations

import numpy as np

from onesearch_jax.model.configs import ModelConfig

EOS_ID = 1  # T5 convention: 0 pad/BOS, 1 EOS


def sid_ranges_for(vocab_size: int, text_vocab: int, codes: tuple[int, ...]):
  """Consecutive SID ranges after `text_vocab` text ids.

  Args:
    vocab_size: V (checked to hold every range).
    text_vocab: number of text ids (they come first).
    codes: codebook size per level, e.g. (8, 8, 8, 8, 8).

  Returns:
    ((start, end), ...) per level.
  """
  out, start = [], text_vocab
  for n in codes:
    out.append((start, start + n))
    start += n
  if start > vocab_size:
    raise ValueError(f"SID ranges end at {start} > vocab_size {vocab_size}")
  return tuple(out)


def random_sids(
  rng: np.random.Generator, n: int, sid_ranges: tuple[tuple[int, int], ...]
) -> np.ndarray:
  """[n, n_levels] int32 SID token ids, one uniform draw per level."""
  cols = [rng.integers(s, e, size=n) for s, e in sid_ranges]
  return np.stack(cols, axis=1).astype(np.int32)


def make_batch(
  cfg: ModelConfig,
  batch_size: int,
  enc_len: int,
  *,
  seed: int = 0,
  sids: np.ndarray | None = None,
  text_vocab: int | None = None,
  placeholder_rows: float = 0.5,
) -> dict[str, np.ndarray]:
  """A batch: random text encoder input -> SID target (+ EOS).

  Args:
    cfg: the model config (vocab_size, sid_ranges, emb_placeholder_id,
      seq_feature_dim, num_seq_vectors).
    batch_size: B.
    enc_len: L; the last 1-2 positions of some rows are padding.
    seed: numpy seed.
    sids: optional [B, S] target SIDs (else random from cfg.sid_ranges).
    text_vocab: encoder text ids are drawn from [2, text_vocab); defaults to
      the first SID id.
    placeholder_rows: fraction of rows that get one placeholder token.

  Returns:
    The batch contract dict (numpy).
  """
  if not cfg.sid_ranges:
    raise ValueError("make_batch needs cfg.sid_ranges")
  rng = np.random.default_rng(seed)
  text_vocab = text_vocab or cfg.sid_ranges[0][0]
  if sids is None:
    sids = random_sids(rng, batch_size, cfg.sid_ranges)
  enc = rng.integers(2, text_vocab, size=(batch_size, enc_len)).astype(np.int32)
  if cfg.emb_placeholder_id >= 0:
    enc[enc == cfg.emb_placeholder_id] = 2
    for r in range(batch_size):
      if rng.random() < placeholder_rows:
        enc[r, rng.integers(0, enc_len - 2)] = cfg.emb_placeholder_id
  pad = rng.integers(0, 3, size=batch_size)
  for r in range(batch_size):
    if pad[r]:
      enc[r, enc_len - pad[r] :] = 0
  targets = np.concatenate(
    [sids.astype(np.int32), np.full((batch_size, 1), EOS_ID, np.int32)], axis=1
  )
  dec_in = np.concatenate(
    [np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1
  )
  feats = rng.normal(size=(batch_size, cfg.num_seq_vectors, cfg.seq_feature_dim))
  return {
    "encoder_input_tokens": enc,
    "decoder_input_tokens": dec_in,
    "decoder_target_tokens": targets,
    "decoder_loss_weights": np.ones(targets.shape, np.float32),
    "long_seq_features": feats.astype(np.float32),
  }
