"""Optimised product quantisation (OPQ) of the level-3 residual (SPEC §2.3).

The official code calls ``faiss.index_factory(d, "OPQ2,IVF1,PQ2x8")``: learn an
orthogonal rotation R, take the residual to the single IVF centroid (the mean),
and product-quantise the two halves of the rotated vector with 256 codes each.
We do the same in JAX/numpy:

1. centre: x <- x - mean (the IVF1 residual);
2. R starts as a seeded random orthogonal matrix (as faiss does);
3. alternate (``n_iter`` times): PQ k-means on Y = X R (the first round runs
   ``n_iter_pq0`` Lloyd iterations, later rounds ``n_iter_pq`` iterations
   warm-started from the previous codebooks), then the orthogonal Procrustes
   step R = U V^T where U S V^T = svd(X^T Y_hat) and Y_hat is the PQ
   reconstruction, which minimises ||X R - Y_hat||_F over orthogonal R;
4. the final PQ on X R with the final R: by default (``final_retrain``) a
   fresh k-means on a new sample of the N points, as faiss's IVFPQ training
   after OPQ does (measured: higher ICR than refining the last alternation's
   codebooks, at a slightly higher error); else a warm-started refit.

Training uses at most ``max_train_points`` sampled points (faiss OPQ uses
256 * 256). Row-vector convention: ``y = (x - mean) @ rotation``.

Speed: without a mesh, every warm-started alternation is one jitted call
(``_alternation``: the Lloyd of every subspace, the decode and Procrustes on
device), bit-identical to the per-subspace ``fit_kmeans`` path that a mesh
still takes. On the 200k benchmark ~10 alternations reach the ICR of 50
(docs/BENCHMARKS.md); ``QuantizerConfig.opq_iter`` keeps faiss's 50.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from onesearch_jax.khqe import kmeans, lloyd

ROTATION_INITS = ("random", "pca")


@dataclasses.dataclass(frozen=True)
class OPQ:
  """A fitted OPQ quantiser.

  Attributes:
    mean: [D] centre (the IVF1 centroid).
    rotation: [D, D] orthogonal; rotated = (x - mean) @ rotation.
    codebooks: [M, K, D // M] sub-quantiser centroids.
  """

  mean: np.ndarray
  rotation: np.ndarray
  codebooks: np.ndarray

  @property
  def n_subspaces(self) -> int:
    return self.codebooks.shape[0]

  @property
  def n_codes(self) -> int:
    return self.codebooks.shape[1]


@jax.jit
def _procrustes(x: jax.Array, y_hat: jax.Array) -> jax.Array:
  """argmin_R ||x R - y_hat||_F over orthogonal R; x, y_hat [N, D] -> [D, D]."""
  m = jnp.matmul(x.T, y_hat, precision=jax.lax.Precision.HIGHEST)
  u, _, vt = jnp.linalg.svd(m, full_matrices=False)
  return u @ vt


@functools.partial(jax.jit, static_argnames=("tile",))
def _alternation(xc, y, books, n_iter, *, tile):
  """One warm-started OPQ alternation in one call: PQ Lloyd on every
  subspace of y = xc R, the PQ reconstruction, then the Procrustes step.

  The arithmetic is that of ``_pq_train`` (``lloyd.lloyd_on_device`` is
  bit-identical to ``fit_kmeans`` with a warm start), ``_pq_decode`` and
  ``_procrustes``, without a host round trip per subspace.

  Args:
    xc: [N, D] centred training points; y: [N, D] their rotation.
    books: [M, K, D / M] warm-start codebooks.
    n_iter: Lloyd iterations per subspace.
    tile: the k-means tile rows (``kmeans.global_tile(N, K)``).

  Returns:
    (rotation [D, D], codebooks [M, K, D / M]).
  """
  m = books.shape[0]
  new_books, parts = [], []
  for j, part in enumerate(jnp.split(y, m, axis=1)):
    c, a, _ = lloyd.lloyd_on_device(part, books[j], n_iter, tile=tile)
    new_books.append(c)
    parts.append(c[a])
  return _procrustes(xc, jnp.concatenate(parts, axis=1)), jnp.stack(new_books)


@functools.partial(jax.jit, static_argnames=("tile",))
def _fused_fit(xc, rotation, books, n_alt, n_iter_first, n_iter_pq, *, tile):
  """``n_alt`` >= 1 alternations in one program: y = xc R on device, then
  ``_alternation`` (PQ Lloyd per subspace, decode, Procrustes); the first
  runs ``n_iter_first`` Lloyd iterations, the others ``n_iter_pq``.

  Args:
    xc: [N, D] centred training points.
    rotation: [D, D] start rotation; books: [M, K, D / M] start codebooks
      (the PQ init on ``xc @ rotation``).
    n_alt, n_iter_first, n_iter_pq: traced int32 counts (no recompile).
    tile: the k-means tile rows (``kmeans.global_tile(N, K)``).

  Returns:
    (rotation [D, D] after the last Procrustes step, codebooks [M, K, D / M]
    of the last alternation's PQ fit, i.e. fitted on ``xc @`` the rotation
    passed to that alternation).
  """

  def alternate(rot, bks, n_iter):
    y = jnp.matmul(xc, rot, precision=jax.lax.Precision.HIGHEST)
    return _alternation(xc, y, bks, n_iter, tile=tile)

  state = alternate(rotation, books, n_iter_first)
  return jax.lax.fori_loop(1, n_alt, lambda _, s: alternate(*s, n_iter_pq), state)


def _fused(xc, rotation, books, counts, *, n_codes, m, seed, init):
  """``_fused_fit`` on host arrays: xc [N, D], rotation [D, D], books
  [M, K, D / M] or None (``_init_books`` on ``xc @ rotation``), counts =
  (alternations, first Lloyd iterations, later ones). Returns numpy
  (rotation, books)."""
  if books is None:
    books = _init_books(xc @ rotation, n_codes, m, seed=seed, init=init)
  rotation, books = _fused_fit(
    jnp.asarray(xc),
    rotation,
    books,
    *np.int32(counts),
    tile=kmeans.global_tile(xc.shape[0], n_codes),
  )
  return np.asarray(rotation), np.asarray(books)


def _init_books(y: np.ndarray, n_codes: int, m: int, *, seed: int, init: str):
  """[M, K, D / M] PQ start codebooks on y [N, D]: per subspace j the
  ``fit_kmeans`` init with seed ``seed + j`` (k-means++ or random)."""
  parts = [np.ascontiguousarray(p) for p in _split(y, m)]
  if init == "random":
    books = [kmeans.random_init(p, n_codes, seed=seed + j) for j, p in enumerate(parts)]
  else:
    books = [
      kmeans.kmeanspp_init(p, n_codes, seed=seed + j) for j, p in enumerate(parts)
    ]
  return np.stack(books).astype(np.float32)


def pca_rotation(xc: np.ndarray, m: int) -> np.ndarray:
  """[D, D] orthogonal start rotation by eigenvalue allocation (the
  parametric OPQ solution for Gaussian data): the principal axes of xc [N, D]
  dealt, largest variance first, to the subspace with the smallest product
  of the variances it holds so far (among those not yet full), so the M
  subspaces get balanced variance products. Columns j*D/M..(j+1)*D/M are
  subspace j's axes."""
  d = xc.shape[1]
  cov = xc.astype(np.float64).T @ xc.astype(np.float64) / max(xc.shape[0], 1)
  eigval, eigvec = np.linalg.eigh(cov)
  order = np.argsort(-eigval, kind="stable")
  sub = d // m
  log_prod = np.zeros(m)
  members = [[] for _ in range(m)]
  for i in order:
    open_ = [j for j in range(m) if len(members[j]) < sub]
    j = min(open_, key=lambda j: (log_prod[j], j))
    members[j].append(i)
    log_prod[j] += np.log(max(eigval[i], 1e-12))
  return eigvec[:, [i for mem in members for i in mem]].astype(np.float32)


def _split(y: np.ndarray, m: int) -> list[np.ndarray]:
  return np.split(y, m, axis=1)


def _pq_train(
  y: np.ndarray,
  codebooks: np.ndarray | None,
  n_codes: int,
  m: int,
  *,
  seed: int,
  n_iter: int,
  mesh: jax.sharding.Mesh | None,
  init: str = "kmeans++",
) -> tuple[np.ndarray, np.ndarray]:
  """PQ k-means per subspace. Returns (codebooks [M, K, d], codes [N, M])."""
  books, codes = [], []
  for j, part in enumerate(_split(y, m)):
    start = None if codebooks is None else codebooks[j]
    km = kmeans.fit_kmeans(
      part,
      n_codes,
      seed=seed + j,
      n_iter=n_iter,
      mesh=mesh,
      init_centroids=start,
      init=init,
    )
    books.append(km.centroids)
    codes.append(km.assign)
  return np.stack(books), np.stack(codes, axis=1).astype(np.int32)


def _pq_decode(codebooks: np.ndarray, codes: np.ndarray) -> np.ndarray:
  return np.concatenate(
    [codebooks[j][codes[:, j]] for j in range(codebooks.shape[0])], axis=1
  )


def fit_opq(
  x: np.ndarray,
  n_subspaces: int = 2,
  n_codes: int = 256,
  *,
  seed: int = 0,
  n_iter: int = 50,
  n_iter_pq: int = 4,
  n_iter_pq0: int = 40,
  n_iter_final: int = 25,
  max_train_points: int = 256 * 256,
  learn_rotation: bool = True,
  pq_init: str = "kmeans++",
  final_retrain: bool = True,
  fused: bool = False,
  rotation_init: str = "random",
  mesh: jax.sharding.Mesh | None = None,
) -> OPQ:
  """Learns the OPQ rotation and PQ codebooks.

  Args:
    x: [N, D] float32 vectors (the level-3 residuals); D % n_subspaces == 0.
    n_subspaces: M sub-quantisers.
    n_codes: K codes per sub-quantiser (N >= K).
    seed: random seed.
    n_iter: alternations of PQ and Procrustes.
    n_iter_pq: Lloyd iterations per alternation after the first.
    n_iter_pq0: Lloyd iterations of the first alternation.
    n_iter_final: Lloyd iterations of the final PQ refit.
    max_train_points: training subsample size.
    learn_rotation: False gives plain PQ (identity rotation), the baseline.
    pq_init: init of the first PQ k-means ("kmeans++" or "random").
    final_retrain: the final PQ is a fresh k-means (``pq_init``) on a new
      sample of ``max_train_points`` of all N points (what faiss's IVFPQ
      training after OPQ does) instead of a warm-started refit.
    fused: run every alternation, and the final PQ fit, inside one jitted
      program (``_fused_fit``: y = x R on device, no host round trip per
      alternation, one compilation for the whole fit); the PQ inits are
      drawn as in the default path. Not bit-identical to the default path
      (y is computed by XLA instead of numpy), so off by default; the mesh
      is not used for the fit (the training sample is at most
      ``max_train_points`` rows).
    rotation_init: "random" (a seeded random orthogonal matrix, faiss's) or
      "pca" (``pca_rotation``: principal axes by eigenvalue allocation).
    mesh: optional mesh for the k-means.

  Returns:
    The fitted ``OPQ``.
  """
  x = np.asarray(x, np.float32)
  n, d = x.shape
  if d % n_subspaces:
    raise ValueError(f"fit_opq: dim {d} is not divisible by {n_subspaces} subspaces")
  if n < n_codes:
    raise ValueError(f"fit_opq: need at least n_codes={n_codes} points, got {n}")
  if rotation_init not in ROTATION_INITS:
    raise ValueError(
      f"fit_opq: rotation_init must be one of {ROTATION_INITS}, got {rotation_init!r}"
    )
  rng = np.random.default_rng(seed)
  x_all = x
  if n > max_train_points:
    x = x[np.sort(rng.choice(n, size=max_train_points, replace=False))]
  mean = x.mean(axis=0)
  xc = x - mean
  if learn_rotation:
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    rotation = rotation.astype(np.float32)
    if rotation_init == "pca":
      rotation = pca_rotation(xc, n_subspaces)
  else:
    rotation = np.eye(d, dtype=np.float32)
  books = None
  tile = kmeans.global_tile(xc.shape[0], n_codes)
  pq = dict(n_codes=n_codes, m=n_subspaces, seed=seed + 7, init=pq_init)
  if fused and learn_rotation and n_iter:
    # Every alternation in one program (see ``_fused_fit``).
    rotation, books = _fused(xc, rotation, None, (n_iter, n_iter_pq0, n_iter_pq), **pq)
  elif learn_rotation:
    xc_device = jnp.asarray(xc)
    for it in range(n_iter):
      y = xc @ rotation
      if it and mesh is None:
        rotation, books = _alternation(
          xc_device, y, books, np.int32(n_iter_pq), tile=tile
        )
        rotation = np.asarray(rotation)
        continue
      books, codes = _pq_train(
        y,
        books,
        n_codes,
        n_subspaces,
        seed=seed + 7,
        n_iter=n_iter_pq0 if it == 0 else n_iter_pq,
        mesh=mesh,
        init=pq_init,
      )
      y_hat = _pq_decode(books, codes)
      rotation = np.asarray(_procrustes(xc_device, jnp.asarray(y_hat)))
    books = None if books is None else np.asarray(books)
  if final_retrain:
    if n > max_train_points:
      x = x_all[np.sort(rng.choice(n, size=max_train_points, replace=False))]
    xc = x - mean
    books = None
  n_final = n_iter_final if books is not None or final_retrain else n_iter_pq0
  if fused:
    # The final PQ fit: one more call of the same program (its Procrustes
    # output dropped), so the whole fit compiles once.
    _, books = _fused(xc, rotation, books, (1, n_final, 0), **pq)
  else:
    books, _ = _pq_train(
      xc @ rotation,
      books,
      n_codes,
      n_subspaces,
      seed=seed + 7,
      n_iter=n_final,
      mesh=mesh,
      init=pq_init,
    )
  return OPQ(mean=mean.astype(np.float32), rotation=rotation, codebooks=books)


def encode_opq(
  x: np.ndarray, opq: OPQ, *, mesh: jax.sharding.Mesh | None = None
) -> np.ndarray:
  """PQ codes [N, M] int32 of [N, D] vectors (codebooks unchanged)."""
  y = (np.asarray(x, np.float32) - opq.mean) @ opq.rotation
  codes = [
    kmeans.assign_points(part, opq.codebooks[j], mesh=mesh)[0]
    for j, part in enumerate(_split(y, opq.n_subspaces))
  ]
  return np.stack(codes, axis=1).astype(np.int32)


def decode_opq(codes: np.ndarray, opq: OPQ) -> np.ndarray:
  """Reconstruction [N, D] of codes [N, M] in the original (unrotated) space."""
  return _pq_decode(opq.codebooks, codes) @ opq.rotation.T + opq.mean
