"""generator.load_generator on the shared tiny SFT run: the one loader of a
searchable model (eval, Searcher, the pars stage and the RM re-rank use it)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from onesearch_jax import decoding
from onesearch_jax import generator as generator_lib
from onesearch_jax import sharding as sh
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import sft_load

# Every test here needs the shared tiny SFT run (~50 s to build), which no
# quick test builds: the module is in the slow tier.
pytestmark = pytest.mark.slow

BEAM = 6


@pytest.fixture(scope="module")
def workdir(sft_run, sft_sids, tmp_path_factory) -> Workdir:
  res, _ = sft_run
  wd = Workdir(tmp_path_factory.mktemp("generator_wd"))
  wd.sids.symlink_to(sft_sids[0])
  wd.train.symlink_to(res.out_dir)
  return wd


@pytest.fixture(scope="module")
def gen(workdir):
  """The workdir's generator, one device, batches as given (one compile)."""
  return generator_lib.load_generator(workdir, beam_size=BEAM)


@pytest.fixture(scope="module")
def prompts(gen, sft_world):
  """[5, L] phase-3 prompts of five logged sessions."""
  prompter = gen.prompter(sft_world)
  return prompter.for_sessions(sorted(prompter.sessions)[:5])


def _same(a: decoding.BeamResult, b: decoding.BeamResult):
  for field in ("tokens", "codes", "scores", "sid_index"):
    np.testing.assert_array_equal(
      np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), err_msg=field
    )


def _perturbed(model):
  """A copy of the model with every parameter shifted (same shapes)."""
  other = nnx.clone(model)
  params = nnx.state(other, nnx.Param)
  nnx.update(other, jax.tree.map(lambda x: x + 0.05 * jax.numpy.sign(x), params))
  return other


def test_generator_matches_a_direct_beam_search_of_the_trained_model(
  workdir, gen, prompts
):
  model, _, model_cfg = sft_load.load_trained(workdir.train)
  table = SIDTable.from_artefact(workdir.sids)
  trie = decoding.catalogue_trie(table.item_codes, model_cfg.sid_ranges)
  want = decoding.beam_search(model, prompts, trie, beam_size=BEAM)
  got = gen(prompts)
  _same(got, want)
  assert gen.beam_size == BEAM
  np.testing.assert_array_equal(gen.unique_codes, np.unique(table.item_codes, axis=0))
  # The beams are catalogue SIDs: sid_index rows of unique_codes match the codes.
  sid = np.asarray(got.sid_index)
  assert (sid >= 0).all()
  np.testing.assert_array_equal(gen.unique_codes[sid], np.asarray(got.codes))


def test_fixed_batch_on_a_mesh_pads_and_drops_padding_rows(workdir, gen, prompts):
  mesh = sh.make_mesh(sh.MeshConfig(shape=(8, 1, 1)))
  fixed = generator_lib.load_generator(
    workdir, beam_size=BEAM, batch_size=8, mesh=mesh, rules=sh.DP_RULES
  )
  leaf = jax.tree.leaves(fixed.searcher.state)[0]
  assert len(leaf.sharding.device_set) == 8  # the model is replicated on the mesh
  full = fixed(prompts)  # 5 rows padded to 8, split over 8 devices
  assert np.asarray(full.scores).shape == (5, BEAM)
  # Another batch shape and mesh is another XLA program: equal up to round-off.
  np.testing.assert_allclose(
    np.asarray(full.scores), np.asarray(gen(prompts).scores), rtol=1e-5
  )
  for rows in (1, 3):
    part = {k: np.asarray(v)[:rows] for k, v in prompts.items()}
    got = fixed(part)
    assert np.asarray(got.scores).shape == (rows, BEAM)
    _same(got, jax.tree.map(lambda x, r=rows: np.asarray(x)[:r], full))
  assert fixed.searcher.fn._cache_size() == 1  # one compiled shape for all
  too_many = {k: np.repeat(np.asarray(v), 2, axis=0) for k, v in prompts.items()}
  with pytest.raises(ValueError, match="batch of 10 rows > batch_size 8"):
    fixed(too_many)


def test_with_model_swaps_weights_without_recompiling(workdir, gen, prompts):
  first = gen(prompts)
  other_model = _perturbed(gen.model)
  other = gen.with_model(other_model)
  got = other(prompts)
  assert other.searcher.fn is gen.searcher.fn
  assert gen.searcher.fn._cache_size() == 1
  # Independent expectation: a fresh generator built around the other model.
  fresh = generator_lib.load_generator(workdir, beam_size=BEAM, model=other_model)
  _same(got, fresh(prompts))
  assert not np.array_equal(np.asarray(got.scores), np.asarray(first.scores))
  # The original generator is unchanged.
  _same(gen(prompts), first)
  # Its own model gives the generator itself (no second placement).
  assert gen.with_model(gen.model) is gen


def test_load_generator_rejects_bad_sizes_and_lists_no_phases(workdir, tmp_path):
  with pytest.raises(ValueError, match="beam_size must be >= 1"):
    generator_lib.load_generator(workdir, beam_size=0)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    generator_lib.load_generator(workdir, beam_size=2, batch_size=0)
  assert generator_lib.existing_phases(tmp_path) == []
  with pytest.raises(ValueError, match="not in"):
    generator_lib.load_phase_model(workdir, "pars3", None)


def test_a_train_dir_from_before_the_phase_names_asks_for_a_retrain(tmp_path):
  wd = Workdir(tmp_path)
  (wd.train / "stage3").mkdir(parents=True)  # SFT phases were called stages
  with pytest.raises(FileNotFoundError, match="stage1..3 directories: retrain"):
    generator_lib.load_generator(wd, beam_size=2)
