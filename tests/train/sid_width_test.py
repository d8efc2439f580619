"""SID ranges for any OPQ depth (the Table 7 ablation): derive_model_config
slices the shared d_ range into one range per OPQ code, and run_sft refuses
phase-3 targets too short for the artefact's SIDs."""

from __future__ import annotations

import json

import pytest

from onesearch_jax.data.museq import MuSeqConfig
from onesearch_jax.model.configs import model_config
from onesearch_jax.train import sft, sft_config


class _Vocab:
  """The three things derive_model_config reads of a vocabulary."""

  def __init__(self, sizes: dict[str, int], start: int = 300):
    self._ranges, pos = {}, start
    for p, n in sizes.items():
      self._ranges[p] = range(pos, pos + n)
      pos += n
    self.vocab_size = pos

  def level_range(self, p):
    return self._ranges[p]

  def token_id(self, token):
    assert token == "[EMB]"
    return 299


@pytest.mark.parametrize("n_opq", [0, 1, 2, 4])
def test_sid_ranges_per_opq_depth(n_opq):
  vocab = _Vocab({"a": 16, "b": 4, "c": 4, "d": 8 * n_opq, "u": 0})
  cfg = sft_config.derive_model_config(
    model_config("tiny"), vocab, MuSeqConfig(), 8, n_opq=n_opq
  )
  want = [(300, 316), (316, 320), (320, 324)]
  want += [(324 + 8 * j, 332 + 8 * j) for j in range(n_opq)]
  assert [tuple(r) for r in cfg.sid_ranges] == want
  assert cfg.vocab_size == 324 + 8 * n_opq


def test_d_range_must_split_into_the_opq_codes():
  with pytest.raises(ValueError, match="does not hold 3 OPQ codes"):
    sft_config.derive_model_config(
      model_config("tiny"), _Vocab({"a": 4, "b": 4, "c": 4, "d": 8}), MuSeqConfig(), 8,
      n_opq=3,
    )  # fmt: skip
  with pytest.raises(ValueError, match="does not hold 0 OPQ codes"):
    sft_config.derive_model_config(
      model_config("tiny"), _Vocab({"a": 4, "b": 4, "c": 4, "d": 8}), MuSeqConfig(), 8,
      n_opq=0,
    )  # fmt: skip


def test_artefact_opq_subspaces_and_short_targets(tmp_path, tiny_sft_config):
  cfg = tiny_sft_config()
  (tmp_path / "config.json").write_text(json.dumps({"quantizer": {"opq_subspaces": 4}}))
  assert sft_config.artefact_opq_subspaces(tmp_path) == 4
  with pytest.raises(ValueError, match="no quantizer.opq_subspaces"):
    sft_config.artefact_opq_subspaces(tmp_path / "missing")
  # 7-token SIDs + EOS do not fit the default 6 phase-3 target tokens.
  assert cfg.lengths[2][1] < 8
  with pytest.raises(ValueError, match="cannot hold the 7-token SIDs"):
    sft.run_sft(tmp_path, tmp_path, tmp_path / "out", cfg)
