"""RQ-OPQ: the 5-token semantic-ID quantiser of KHQE (SPEC §2.3).

``fit`` learns 3 RQ-Kmeans levels (``rq.py``) and then OPQ on the level-3
residual (``opq.py``). ``Quantizer.encode`` maps any embedding (training or
new) to local codes ``[a, b, c, d_1, ..., d_s]`` with the fitted codebooks
unchanged, which is the incremental assignment of new items.

Note: ``encode`` is the canonical code. For training points it equals the
fitted assignment, except for exact duplicate residuals inside a level-2
group with n <= k3 points: fitting gives each of those its own c code (the
official behaviour), ``encode`` gives identical vectors identical codes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np

from onesearch_jax.khqe import opq as opq_lib
from onesearch_jax.khqe import rq


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
    seed: random seed.
  """

  levels: tuple[int, int, int] = (4096, 1024, 512)
  l3_mode: str = "parent"
  opq_subspaces: int = 2
  opq_codes: int = 256
  n_iter: int = 25
  opq_iter: int = 50
  seed: int = 0

  def __post_init__(self):
    if len(self.levels) != 3 or min(self.levels) < 1:
      raise ValueError(f"levels must be 3 positive sizes, got {self.levels}")
    if self.l3_mode not in rq.L3_MODES:
      raise ValueError(f"l3_mode must be one of {rq.L3_MODES}, got {self.l3_mode!r}")
    if self.opq_subspaces < 0 or (self.opq_subspaces and self.opq_codes < 1):
      raise ValueError("opq_subspaces must be >= 0 and opq_codes >= 1")
    object.__setattr__(self, "levels", tuple(int(k) for k in self.levels))

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

  def _encode(self, emb, mesh) -> tuple[np.ndarray, list[float]]:
    """(codes [N, 3 + s], mean squared residual after every level)."""
    codes, mse, r3 = rq.encode_rq(emb, self.rq, mesh=mesh)
    if self.opq is None:
      return codes, mse
    d = opq_lib.encode_opq(r3, self.opq, mesh=mesh)
    r3 -= opq_lib.decode_opq(d, self.opq)
    mse.append(float(np.mean(np.sum(r3.astype(np.float64) ** 2, axis=1))))
    return np.concatenate([codes, d], axis=1), mse

  def encode(
    self, emb: np.ndarray, *, mesh: jax.sharding.Mesh | None = None
  ) -> np.ndarray:
    """Local codes of embeddings, codebooks unchanged.

    Args:
      emb: [N, D] float32 embeddings.
      mesh: optional mesh.

    Returns:
      [N, 3 + opq_subspaces] int32: a in [0, k1), b in [0, k2), c in [0, k3),
      d_j in [0, opq_codes).
    """
    return self._encode(emb, mesh)[0]

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
    _, mse = self._encode(emb, mesh)
    names = ["l1", "l2", "l3", "opq"][: len(mse)]
    out = {"input": float(np.mean(np.sum(emb.astype(np.float64) ** 2, axis=1)))}
    out.update(zip(names, mse, strict=True))
    return out


def fit(
  emb: np.ndarray,
  config: QuantizerConfig,
  *,
  mesh: jax.sharding.Mesh | None = None,
  progress: Callable[[str], None] | None = None,
) -> Quantizer:
  """Fits RQ-Kmeans (3 levels) and OPQ on the level-3 residual.

  Args:
    emb: [N, D] float32 embeddings (queries and items clustered jointly).
    config: quantiser settings.
    mesh: optional mesh; points are sharded over it.
    progress: optional callback receiving one line per stage.

  Returns:
    The fitted ``Quantizer``.
  """
  emb = np.asarray(emb, np.float32)
  if emb.ndim != 2:
    raise ValueError(f"fit: expected embeddings [N, D], got shape {emb.shape}")
  codebooks, _, r3 = rq.fit_rq(
    emb,
    config.levels,
    l3_mode=config.l3_mode,
    seed=config.seed,
    n_iter=config.n_iter,
    mesh=mesh,
    progress=progress,
  )
  opq = None
  if config.opq_subspaces:
    opq = opq_lib.fit_opq(
      r3,
      config.opq_subspaces,
      config.opq_codes,
      seed=config.seed + 3,
      n_iter=config.opq_iter,
      mesh=mesh,
    )
    if progress:
      progress(f"OPQ: {config.opq_subspaces}x{config.opq_codes}")
  return Quantizer(config=config, rq=codebooks, opq=opq)


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
