"""RQ-OPQ: the 5-token semantic-ID quantiser of KHQE (SPEC §2.3).

``fit`` learns 3 RQ-Kmeans levels (``rq.py``) and then OPQ on the level-3
residual (``opq.py``). ``Quantizer.encode`` maps any embedding (training or
new) to local codes ``[a, b, c, d_1, ..., d_s]`` with the fitted codebooks
unchanged, which is the incremental assignment of new items.

``fit_encode`` returns the codes of the training points together with the
fit: the RQ codes are the fit's own assignments (no second pass) and only the
OPQ columns are computed, in one fused pass over the level-3 residual.

Note: ``encode`` is the canonical code. For training points it equals the
fitted assignment (``fit_encode``'s codes), except for exact duplicate
residuals inside a level-3 group with n <= k3 points: fitting gives each of
those its own c code (the official behaviour), ``encode`` gives identical
vectors identical codes.

Encoding runs every level of a block of points in one jitted call on device
(``sid_encode.py``), with block sizes bucketed so new N reuse compiled code.
``fit_encode(..., warm_encode=True)`` compiles the encoder's programs in a
background thread while the fit runs, so the first ``encode`` after it
compiles nothing.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from collections.abc import Callable

import jax
import numpy as np

from onesearch_jax.khqe import kmeans, rq, sid_encode
from onesearch_jax.khqe import opq as opq_lib

ERROR_NAMES = ("l1", "l2", "l3", "opq")


def _pow2_round(v: float) -> int:
  return int(2 ** round(math.log2(max(v, 1.0))))


@dataclasses.dataclass(frozen=True)
class QuantizerConfig:
  """RQ-OPQ settings.

  Attributes:
    levels: RQ codebook sizes (k1, k2, k3).
    l3_mode: "parent" (per-L2-group k-means, official --balanced 2),
      "parent_ab" (per-(L1, L2)-pair k-means, official --balanced 1) or
      "global".
    opq_subspaces: OPQ sub-quantisers on the level-3 residual (0 = no OPQ).
    opq_codes: codes per OPQ sub-quantiser.
    n_iter: Lloyd iterations per RQ level (faiss niter).
    opq_iter: OPQ alternations (faiss OPQMatrix niter).
    opq_final_retrain: after the alternations, fit the PQ codebooks afresh on
      a new training sample (what faiss's IVFPQ training after OPQ does)
      instead of refining the last alternation's codebooks; +1.3-2 ICR
      points on the 200k benchmark (docs/BENCHMARKS.md).
    max_points_per_centroid: train every RQ k-means on a seeded sample of at
      most this many points per centroid, then assign all points (faiss's
      sampling; faiss's default is 256, the official code passes 10000).
      None (default) trains on all points.
    opq_fused: fit OPQ in one jitted program (``opq.fit_opq(fused=True)``:
      every alternation and the final PQ fit on device, one compilation);
      not bit-identical to the default path, so off (the main job's codes
      are unchanged).
    opq_rotation_init: the OPQ start rotation, "random" (faiss's, default)
      or "pca" (eigenvalue allocation, ``opq.pca_rotation``: reaches the
      ICR of 10 random-start alternations in fewer).
    opq_iter_pq0: Lloyd iterations of the first OPQ alternation's PQ fit
      (faiss's niter_pq_0, 40).
    opq_train_points: OPQ training sample size (faiss's 256 * 256).
    opq_pq_init: init of the OPQ PQ k-means, "kmeans++" (default) or
      "random" (faiss's: no k-means++ runs or compilation).
    seed: random seed.
  """

  levels: tuple[int, int, int] = (4096, 1024, 512)
  l3_mode: str = "parent"
  opq_subspaces: int = 2
  opq_codes: int = 256
  n_iter: int = 25
  opq_iter: int = 50
  opq_final_retrain: bool = True
  max_points_per_centroid: int | None = None
  opq_fused: bool = False
  opq_rotation_init: str = "random"
  opq_iter_pq0: int = 40
  opq_train_points: int = 256 * 256
  opq_pq_init: str = "kmeans++"
  seed: int = 0

  def __post_init__(self):
    if len(self.levels) != 3 or min(self.levels) < 1:
      raise ValueError(f"levels must be 3 positive sizes, got {self.levels}")
    if self.l3_mode not in rq.L3_MODES:
      raise ValueError(f"l3_mode must be one of {rq.L3_MODES}, got {self.l3_mode!r}")
    if self.opq_subspaces < 0 or (self.opq_subspaces and self.opq_codes < 1):
      raise ValueError("opq_subspaces must be >= 0 and opq_codes >= 1")
    if self.max_points_per_centroid is not None and self.max_points_per_centroid < 1:
      raise ValueError(
        f"max_points_per_centroid must be None or >= 1, got "
        f"{self.max_points_per_centroid}"
      )
    if self.opq_rotation_init not in opq_lib.ROTATION_INITS:
      raise ValueError(
        f"opq_rotation_init must be one of {opq_lib.ROTATION_INITS}, got "
        f"{self.opq_rotation_init!r}"
      )
    if self.opq_pq_init not in kmeans.INITS:
      raise ValueError(
        f"opq_pq_init must be one of {kmeans.INITS}, got {self.opq_pq_init!r}"
      )
    if self.opq_iter_pq0 < 1 or self.opq_train_points < 1:
      raise ValueError(
        f"opq_iter_pq0 and opq_train_points must be >= 1, got "
        f"{self.opq_iter_pq0}, {self.opq_train_points}"
      )
    object.__setattr__(self, "levels", tuple(int(k) for k in self.levels))

  def to_dict(self) -> dict:
    """``dataclasses.asdict`` without the fields of ``_OMITTED_AT_DEFAULT``
    while they hold their defaults: an artefact written without them keeps
    the bytes, and content hash, it had before those fields existed
    (``QuantizerConfig(**d)`` restores the defaults)."""
    out = dataclasses.asdict(self)
    for name in _OMITTED_AT_DEFAULT:
      if out[name] == _FIELD_DEFAULTS[name]:
        del out[name]
    return out

  @classmethod
  def scaled(cls, n_points: int, **overrides) -> QuantizerConfig:
    """Sizes scaled to a catalogue of ``n_points`` embeddings.

    Rule: k1 = sqrt(N) rounded to a power of two (clipped to [4, 4096]),
    k2 = k1 / 4 (clipped to [2, 1024]), k3 = k1 / 8 (clipped to [2, 512]),
    i.e. the paper's 8:2:1 shape, which gives exactly 4096-1024-512 for the
    paper's tens of millions (sqrt(10M..60M) ~ 3.2k..7.7k -> 4096).
    opq_codes = min(256, largest power of two <= N / 4).

    Args:
      n_points: number of embeddings the quantiser is fitted on.
      **overrides: other ``QuantizerConfig`` fields.
    """
    if n_points < 16:
      raise ValueError(f"QuantizerConfig.scaled: need >= 16 points, got {n_points}")
    k1 = min(4096, max(4, _pow2_round(math.sqrt(n_points))))
    k2 = min(1024, max(2, k1 // 4))
    k3 = min(512, max(2, k1 // 8))
    opq_codes = min(256, 2 ** int(math.log2(n_points // 4)))
    kwargs = dict(levels=(k1, k2, k3), opq_codes=opq_codes)
    kwargs.update(overrides)
    return cls(**kwargs)


# Fields added after artefacts were first written; ``to_dict`` leaves each
# out while it holds its default.
_OMITTED_AT_DEFAULT = (
  "max_points_per_centroid",
  "opq_fused",
  "opq_rotation_init",
  "opq_iter_pq0",
  "opq_train_points",
  "opq_pq_init",
)
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(QuantizerConfig)}


@dataclasses.dataclass(frozen=True)
class Quantizer:
  """A fitted RQ-OPQ quantiser.

  Attributes:
    config: the settings it was fitted with.
    rq: the three RQ codebooks.
    opq: the OPQ quantiser of the level-3 residual (None if opq_subspaces=0).
  """

  config: QuantizerConfig
  rq: rq.RQCodebooks
  opq: opq_lib.OPQ | None

  @property
  def code_width(self) -> int:
    return 3 + (0 if self.opq is None else self.opq.n_subspaces)

  def _encode(self, emb, mesh, dispatch_threads=None) -> tuple[np.ndarray, np.ndarray]:
    """(codes [N, 3 + s], squared residual norm after every level [N, E])."""
    emb = np.asarray(emb, np.float32)
    if emb.ndim != 2 or emb.shape[1] != self.rq.l1.shape[1]:
      raise ValueError(
        f"encode: expected embeddings [N, {self.rq.l1.shape[1]}], got {emb.shape}"
      )
    if not np.all(np.isfinite(emb)):
      bad = int(np.argwhere(~np.isfinite(emb))[0, 0])
      raise ValueError(f"encode: embedding {bad} has a non-finite value")
    return sid_encode.encode_blocks(
      emb,
      mode=self.rq.l3_mode,
      l1=self.rq.l1,
      l2=self.rq.l2,
      l3=self.rq.l3,
      opq=self.opq,
      mesh=mesh,
      dispatch_threads=dispatch_threads,
    )

  def encode(
    self,
    emb: np.ndarray,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dispatch_threads: int | None = None,
  ) -> np.ndarray:
    """Local codes of embeddings, codebooks unchanged.

    Args:
      emb: [N, D] float32 embeddings.
      mesh: optional mesh.
      dispatch_threads: threads dispatching the encoder's blocks (default
        ``os.cpu_count()``; ``sid_encode.encode_blocks``); same codes for any
        value.

    Returns:
      [N, 3 + opq_subspaces] int32: a in [0, k1), b in [0, k2), c in [0, k3),
      d_j in [0, opq_codes).
    """
    return self._encode(emb, mesh, dispatch_threads)[0]

  def encode_with_errors(
    self,
    emb: np.ndarray,
    *,
    mesh: jax.sharding.Mesh | None = None,
    dispatch_threads: int | None = None,
  ) -> tuple[np.ndarray, np.ndarray]:
    """``encode`` plus the squared residual norm after every level.

    Args:
      emb: [N, D] float32 embeddings.
      mesh: optional mesh.
      dispatch_threads: as for ``encode``.

    Returns:
      (codes [N, 3 + s] int32, sq [N, E] float32: ||r||^2 after l1, l2, l3
      and opq if used; ``mean_errors`` averages them).
    """
    return self._encode(emb, mesh, dispatch_threads)

  def rq_centroid_embeddings(self, codes: np.ndarray) -> np.ndarray:
    """Per-level RQ centroid vectors of codes.

    Args:
      codes: [N, >=3] int codes (only the first 3 columns are used).

    Returns:
      [N, 3, D] float32: level-1, level-2 and level-3 centroid vectors.
    """
    codes = np.asarray(codes)
    a, b, c = codes[:, 0], codes[:, 1], codes[:, 2]
    return np.stack(
      [self.rq.l1[a], self.rq.l2[b], self.rq.level3_vectors(b, c, a)], axis=1
    ).astype(np.float32)

  def reconstruction_errors(
    self, emb: np.ndarray, *, mesh: jax.sharding.Mesh | None = None
  ) -> dict[str, float]:
    """Mean squared residual norm, mean_i ||r_i||^2, after each level.

    Args:
      emb: [N, D] embeddings.
      mesh: optional mesh.

    Returns:
      {"input": mean ||x||^2, "l1", "l2", "l3", and "opq" if OPQ is used}.
    """
    emb = np.asarray(emb, np.float32)
    _, sq = self._encode(emb, mesh)
    return mean_errors(emb, sq)


def mean_errors(emb: np.ndarray, sq: np.ndarray) -> dict[str, float]:
  """{"input", "l1", "l2", "l3"[, "opq"]}: means over points of ||x||^2 and
  of the per-level squared residual norms ``sq`` [N, E]."""
  sq = np.asarray(sq, np.float64)
  out = {"input": float(np.mean(np.sum(np.asarray(emb, np.float64) ** 2, axis=1)))}
  out.update(zip(ERROR_NAMES[: sq.shape[1]], np.mean(sq, axis=0).tolist(), strict=True))
  return out


def fit(
  emb: np.ndarray,
  config: QuantizerConfig,
  *,
  mesh: jax.sharding.Mesh | None = None,
  log: Callable[[str], None] | None = None,
) -> Quantizer:
  """Fits RQ-Kmeans (3 levels) and OPQ on the level-3 residual.

  Args:
    emb: [N, D] float32 embeddings (queries and items clustered jointly).
    config: quantiser settings.
    mesh: optional mesh; points are sharded over it.
    log: optional printer of one line per fitting step.

  Returns:
    The fitted ``Quantizer``.
  """
  return _fit(emb, config, mesh=mesh, log=log, with_codes=False)[0]


def fit_encode(
  emb: np.ndarray,
  config: QuantizerConfig,
  *,
  mesh: jax.sharding.Mesh | None = None,
  log: Callable[[str], None] | None = None,
  warm_encode: bool = False,
) -> tuple[Quantizer, np.ndarray, np.ndarray]:
  """``fit`` plus the codes of the training points, without re-encoding.

  Args:
    emb: [N, D] float32 embeddings.
    config: quantiser settings.
    mesh: optional mesh.
    log: optional printer of one line per fitting step.
    warm_encode: compile the encoder's block programs in a background thread
      while the fit runs (``sid_encode.warm_up``): the program of this
      function's own OPQ pass, and that of ``Quantizer.encode`` of N points
      (any N in the same block bucket, e.g. every N >= 8,192 without a
      mesh), so the first encode compiles nothing. Off by default; the
      codes are the same either way.

  Returns:
    (quantizer, codes [N, 3 + s] int32 (equal to ``quantizer.encode(emb)``,
    see the module note on duplicates), sq [N, E] float32 squared residual
    norm after each level, for ``mean_errors``).
  """
  return _fit(emb, config, mesh=mesh, log=log, with_codes=True, warm_encode=warm_encode)


def codebook_shapes(config: QuantizerConfig, dim: int) -> dict:
  """The shapes of the codebooks ``fit`` makes for ``dim``-dimensional
  embeddings under ``config``: {"l1", "l2", "l3", "opq"} (opq: the shapes of
  its mean, rotation and codebooks, or None), as ``sid_encode.warm_up``
  takes them."""
  k1, k2, k3 = config.levels
  l3 = {
    "parent": (k2, k3, dim),
    "parent_ab": (k1 * k2, k3, dim),
    "global": (k3, dim),
  }[config.l3_mode]
  m = config.opq_subspaces
  opq = None
  if m:
    opq = ((dim,), (dim, dim), (m, config.opq_codes, dim // m))
  return {"l1": (k1, dim), "l2": (k2, dim), "l3": l3, "opq": opq}


class _EncodeWarmUp:
  """Compiles the encoder's programs for ``_fit`` in a background thread:
  first the OPQ pass of ``fit_encode`` (needed at the end of the fit), then
  ``Quantizer.encode`` of n points. ``join`` waits for it; a failure is
  reported as a warning (the encode then compiles on its own)."""

  def __init__(self, n, dim, config, mesh, with_codes):
    shapes = codebook_shapes(config, dim)
    self.error = None

    def run():
      try:
        if with_codes and shapes["opq"] is not None:
          sid_encode.warm_up(n, dim, mode="opq_only", opq=shapes["opq"], mesh=mesh)
        sid_encode.warm_up(n, dim, mode=config.l3_mode, mesh=mesh, **shapes)
      except Exception as err:  # reported in join
        self.error = err

    self.thread = threading.Thread(target=run, name="khqe-warm-encode", daemon=True)
    self.thread.start()

  def join(self, log):
    self.thread.join()
    if self.error is not None:
      msg = f"encoder warm-up failed ({self.error!r}); encode compiles on first use"
      if log:
        log(msg)
      warnings.warn(msg, stacklevel=3)


def _fit(emb, config, *, mesh, log, with_codes, warm_encode=False):
  emb = np.asarray(emb, np.float32)
  if emb.ndim != 2:
    raise ValueError(f"fit: expected embeddings [N, D], got shape {emb.shape}")
  warm = (
    _EncodeWarmUp(emb.shape[0], emb.shape[1], config, mesh, with_codes)
    if warm_encode
    else None
  )
  try:
    return _fit_and_codes(emb, config, mesh=mesh, log=log, with_codes=with_codes)
  finally:
    if warm is not None:
      warm.join(log)


def _fit_and_codes(emb, config, *, mesh, log, with_codes):
  codebooks, codes, r3 = rq.fit_rq(
    emb,
    config.levels,
    l3_mode=config.l3_mode,
    seed=config.seed,
    n_iter=config.n_iter,
    mesh=mesh,
    log=log,
    max_points_per_centroid=config.max_points_per_centroid,
  )
  opq = None
  if config.opq_subspaces:
    opq = opq_lib.fit_opq(
      r3,
      config.opq_subspaces,
      config.opq_codes,
      seed=config.seed + 3,
      n_iter=config.opq_iter,
      final_retrain=config.opq_final_retrain,
      fused=config.opq_fused,
      rotation_init=config.opq_rotation_init,
      n_iter_pq0=config.opq_iter_pq0,
      max_train_points=config.opq_train_points,
      pq_init=config.opq_pq_init,
      mesh=mesh,
    )
    if log:
      log(f"OPQ: {config.opq_subspaces}x{config.opq_codes}")
  quant = Quantizer(config=config, rq=codebooks, opq=opq)
  if not with_codes:
    return quant, None, None
  # Per-level errors of the fitted codes (host gathers, no distance pass).
  r = emb - codebooks.l1[codes[:, 0]]
  sq = [np.sum(r * r, axis=1)]
  r -= codebooks.l2[codes[:, 1]]
  sq.append(np.sum(r * r, axis=1))
  del r
  sq.append(np.sum(r3 * r3, axis=1))
  if opq is not None:
    d, sq_opq = sid_encode.encode_blocks(r3, mode="opq_only", opq=opq, mesh=mesh)
    codes = np.concatenate([codes, d], axis=1)
    sq.append(sq_opq[:, 0])
  return quant, codes.astype(np.int32), np.stack(sq, axis=1).astype(np.float32)


def sid_token_strings(codes: np.ndarray, *, opq_codes: int = 256) -> list[str]:
  """SID token strings ``<a_i><b_j><c_k><d_m><d_{n+256}>``.

  The j-th OPQ code (0-based) is offset by ``j * opq_codes`` so all OPQ codes
  share one ``d_`` vocabulary of ``opq_subspaces * opq_codes`` tokens.

  Args:
    codes: [N, 3 + s] int local codes.
    opq_codes: codes per OPQ sub-quantiser.

  Returns:
    N strings.
  """
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] < 3:
    raise ValueError(f"sid_token_strings: expected codes [N, >=3], got {codes.shape}")
  out = []
  for row in codes.tolist():
    parts = [f"<a_{row[0]}>", f"<b_{row[1]}>", f"<c_{row[2]}>"]
    parts += [f"<d_{v + j * opq_codes}>" for j, v in enumerate(row[3:])]
    out.append("".join(parts))
  return out
