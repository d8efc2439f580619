"""The trained generator of a workdir: model, catalogue trie, beam search.

``load_generator(workdir, beam_size=W)`` is the one way a searchable model is
built from a workdir (``sids/`` + a finished ``train/``). Every consumer goes
through it:

* the eval stage (``eval.workdir_eval``) ranks the test set with the SFT
  model and swaps each PARS phase in with ``Generator.with_model`` (one
  compiled search for every row);
* ``search.Searcher`` (``run.py --mode=infer`` and the Colab quickstart);
* the pars stage (``pars.stage``): phase-1 candidates of the model being
  aligned, swapped in with ``with_model`` at each call;
* the RM re-rank of beams (``pars.beam_rerank.BeamReranker``), which reads the
  generator's ``unique_codes`` (the SIDs in ``sid_index`` order).

``load_phase_model`` restores an aligned PARS phase of ``workdir/pars`` and
``existing_phases`` lists the phases that have a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping

import jax
import numpy as np

from onesearch_jax import decoding
from onesearch_jax import sharding as sh
from onesearch_jax.data import model_batches
from onesearch_jax.data import vocab as vocab_lib
from onesearch_jax.data.session_prompts import SessionPrompter
from onesearch_jax.data.sid_table import SIDTable
from onesearch_jax.data.world_source import WorldTables
from onesearch_jax.decoding.thought import ThoughtConfig
from onesearch_jax.model.configs import ModelConfig
from onesearch_jax.model.transformer import EncoderDecoder
from onesearch_jax.stages.workdir import Workdir
from onesearch_jax.train import checkpoints, sft_load
from onesearch_jax.train import state as state_lib
from onesearch_jax.train.optimizers import OptimizerConfig

# The PARS phases of ``workdir/pars``, in training order.
PARS_PHASES = ("pars1", "pars2")


@dataclasses.dataclass(frozen=True)
class Generator:
  """A trained model with its catalogue trie and compiled beam search.

  Call it with a batch (``encoder_input_tokens`` [B, L], optional
  ``long_seq_features`` [B, 9, D]) for a ``decoding.BeamResult`` of B rows
  (tokens [B, W, S], codes [B, W, S], scores [B, W], sid_index [B, W]).

  Attributes:
    model: the EncoderDecoder whose state the searcher holds.
    vocabulary: the training run's vocabulary.
    model_config: the run's ModelConfig (``sid_ranges``: the SID token
      layout).
    table: the SID table of ``workdir/sids``.
    trie: the catalogue trie (``decoding.catalogue_trie``).
    searcher: the compiled beam search (``decoding.make_beam_search``).
    unique_codes: [U, S] int32 the catalogue's SIDs in ``sid_index`` order.
    train_dir: the SFT run (its data spec and Mu-Seq settings).
    batch_size: rows per search call, or None. When set, every call is
      padded to it with copies of row 0 (one compiled shape for any batch of
      at most ``batch_size`` rows) and the padding rows are dropped.
  """

  model: EncoderDecoder
  vocabulary: vocab_lib.OneSearchVocabulary
  model_config: ModelConfig
  table: SIDTable
  trie: decoding.TrieIndex
  searcher: decoding.BeamSearcher
  unique_codes: np.ndarray
  train_dir: pathlib.Path
  batch_size: int | None = None

  @property
  def beam_size(self) -> int:
    """W: beams per query."""
    return self.searcher.beam_size

  def with_model(self, model: EncoderDecoder) -> Generator:
    """The same compiled search with another model of the same shapes (its
    state is placed like the first one's; no recompile). The generator's own
    model gives the generator itself (its state is not placed again)."""
    if model is self.model:
      return self
    return dataclasses.replace(
      self, model=model, searcher=self.searcher.with_model(model)
    )

  def __call__(self, batch: Mapping[str, np.ndarray]) -> decoding.BeamResult:
    """Beam search of a batch: B rows in, B rows out (numpy arrays when
    ``batch_size`` pads the batch; the searcher's arrays otherwise)."""
    if self.batch_size is None:
      return self.searcher(batch)
    rows = int(np.shape(batch["encoder_input_tokens"])[0])
    if rows > self.batch_size:
      raise ValueError(
        f"Generator: batch of {rows} rows > batch_size {self.batch_size}"
      )
    padded = {}
    for key, value in batch.items():
      value = np.asarray(value)
      if rows < self.batch_size:
        pad = np.repeat(value[:1], self.batch_size - rows, axis=0)
        value = np.concatenate([value, pad], axis=0)
      padded[key] = value
    result = self.searcher(padded)
    return jax.tree.map(lambda x: np.asarray(x)[:rows], result)

  def prompter(self, world: WorldTables | str | os.PathLike) -> SessionPrompter:
    """The phase-3 prompts of sessions and requests in ``world``, as the SFT
    run built them (``session_prompter``)."""
    return session_prompter(world, self.table, self.train_dir, self.vocabulary)


def session_prompter(
  world: WorldTables | str | os.PathLike,
  table: SIDTable,
  train_dir: str | os.PathLike,
  vocabulary: vocab_lib.OneSearchVocabulary | None = None,
) -> SessionPrompter:
  """The SessionPrompter of a finished SFT run: its vocabulary (loaded when
  None), Mu-Seq settings and eval encoder length, on ``world``."""
  spec = model_batches.read_spec(train_dir)
  if vocabulary is None:
    vocabulary = vocab_lib.OneSearchVocabulary.load(spec.vocab_dir)
  return SessionPrompter(
    world,
    table,
    vocabulary,
    sft_load.read_config(train_dir).museq,
    inputs_length=spec.eval_inputs_length,
  )


def load_generator(
  workdir: Workdir | str | os.PathLike,
  *,
  beam_size: int,
  model: EncoderDecoder | None = None,
  phase: str = "phase3",
  batch_size: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
  rules: sh.Rules | None = None,
) -> Generator:
  """The generator of a workdir.

  Args:
    workdir: holds ``sids/`` and a finished ``train/``.
    beam_size: W.
    model: the model to search with (None: the SFT run's final ``phase``
      model, restored on one device); it must have the run's shapes.
    phase: the SFT phase whose parameters are loaded when ``model`` is None.
    batch_size: fixed rows per call (see ``Generator.batch_size``).
    mesh: the batch is split over its batch axes and the model and trie are
      replicated on it (None: one device).
    rules: logical axis rules of ``mesh`` (default dp).

  Returns:
    A Generator (the search compiles on its first call).
  """
  if beam_size < 1:
    raise ValueError(f"load_generator: beam_size must be >= 1: {beam_size}")
  if batch_size is not None and batch_size < 1:
    raise ValueError(f"load_generator: batch_size must be >= 1: {batch_size}")
  wd = Workdir.of(workdir)
  if model is None:
    model, vocabulary, model_config = sft_load.load_trained(wd.train, phase)
  else:
    model_config = sft_load.read_model_config(wd.train)
    spec = model_batches.read_spec(wd.train)
    vocabulary = vocab_lib.OneSearchVocabulary.load(spec.vocab_dir)
  table = SIDTable.from_artefact(wd.sids)
  trie = decoding.catalogue_trie(table.item_codes, model_config.sid_ranges)
  searcher = decoding.make_beam_search(
    model,
    trie,
    beam_size=beam_size,
    mesh=mesh,
    rules=rules,
    thought=thought_config(wd.train, vocabulary, model_config),
  )
  return Generator(
    model=model,
    vocabulary=vocabulary,
    model_config=model_config,
    table=table,
    trie=trie,
    searcher=searcher,
    unique_codes=decoding.unique_sids(table.item_codes),
    train_dir=wd.train,
    batch_size=batch_size,
  )


def thought_config(
  train_dir: str | os.PathLike,
  vocabulary: vocab_lib.OneSearchVocabulary,
  model_config: ModelConfig,
) -> ThoughtConfig | None:
  """How a direct-CoT run's keyword thought is decoded before the SID (None
  unless the run's ``MuSeqConfig.direct_cot`` is on): greedy over the text
  tokens (the SID and ``<u_*>`` ranges banned) until ``[GEN_IID]``, at most
  the phase-3 targets length minus the SID and EOS tokens (the longest
  thought training could hold)."""
  cfg = sft_load.read_config(train_dir)
  if not cfg.museq.direct_cot:
    return None
  users = vocabulary.level_range("u")
  banned = tuple(model_config.sid_ranges) + ((users.start, users.stop),)
  max_len = cfg.lengths[2][1] - len(model_config.sid_ranges) - 1
  if max_len < 1:
    raise ValueError(
      f"{train_dir}: direct CoT needs phase-3 targets longer than the SID + EOS, "
      f"got lengths {cfg.lengths[2]}"
    )
  return ThoughtConfig(
    stop_id=vocabulary.token_id("[GEN_IID]"), max_len=max_len, banned=banned
  )


def existing_phases(pars_dir: str | os.PathLike) -> list[str]:
  """The PARS phases of a pars stage's directory (``workdir/pars``) that have
  a checkpoint."""
  out = []
  for phase in PARS_PHASES:
    directory = pathlib.Path(pars_dir) / phase / "checkpoints"
    if directory.exists():
      ckpt = checkpoints.Checkpointer(directory)
      if ckpt.latest_step() is not None:
        out.append(phase)
      ckpt.close()
  return out


def load_phase_model(
  workdir: Workdir | str | os.PathLike,
  phase: str,
  optimizer: OptimizerConfig,
) -> EncoderDecoder:
  """An aligned PARS phase's model (latest checkpoint, one device).

  Args:
    workdir: holds ``train/`` (the ModelConfig) and ``pars/<phase>``.
    phase: one of ``PARS_PHASES``.
    optimizer: the phase's optimizer settings (the checkpoint holds its
      state; ``ParsConfig.phase1.optimizer`` / ``phase2.optimizer``).
  """
  if phase not in PARS_PHASES:
    raise ValueError(f"phase {phase!r} not in {PARS_PHASES}")
  wd = Workdir.of(workdir)
  return load_phase_model_from(wd, wd.pars / phase / "checkpoints", optimizer)


def load_phase_model_from(
  workdir: Workdir | str | os.PathLike,
  checkpoint_dir: str | os.PathLike,
  optimizer: OptimizerConfig,
) -> EncoderDecoder:
  """The model of a PARS phase's checkpoint directory (latest step, one
  device), with the architecture of ``workdir``'s SFT run."""
  wd = Workdir.of(workdir)
  model_config = sft_load.read_model_config(wd.train)
  ts = state_lib.create_train_state(
    model_config,
    optimizer,
    sh.single_device_mesh(),
    sh.DP_RULES,
    seed=0,
    initialise=False,
  )
  ckpt = checkpoints.Checkpointer(checkpoint_dir)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"{checkpoint_dir}: no checkpoint")
    ts, _ = ckpt.restore(ts)
  finally:
    ckpt.close()
  model, _ = ts.merge()
  return model
