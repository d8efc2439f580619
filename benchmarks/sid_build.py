"""Benchmark: SID build (RQ-Kmeans x3 + OPQ 2x256) in JAX versus faiss.

Builds semantic IDs for N x D synthetic embeddings (a seeded, clustered
Gaussian mixture) twice in the same run on the same machine:

* ours: ``onesearch_jax.khqe.quantizer.fit_encode`` (the fit and the codes of
  all N points), then ``Quantizer.encode`` of all N again and of N/2 (the
  new-items path; the first call includes compiling the fused encoder);
* faiss: what the official ``rq_dynamic.py`` / ``rq_opq.py`` do:
  ``faiss.Kmeans(d, k, niter=25, max_points_per_centroid=10000)`` per level on
  the running residual (level 3 either global, or one ``faiss.Kmeans`` per
  level-2 parent group with n > k3 in a Python loop, as ``--balanced 2``
  does), then ``faiss.index_factory(d, "OPQ2,IVF1,PQ2x8")`` trained on the
  level-3 residual; its re-encode searches the fitted indexes level by level
  (level 3 per parent group) and PQ-encodes the rotated residual.

"SIDs s" is the time from the embeddings to the 5-token codes of all N
points on each side ("RQ s" the part up to the level-3 codes). Prints a
Markdown table (build time, CUR/ICR, reconstruction errors) with both rows
and the ours/faiss ratios, and optionally the peak RSS of our pipeline on a
larger N in a fresh process.

OPQ alternations: faiss runs its default (``--opq_iter``, 50, the official
recipe); ours runs ``--ours_opq_iter`` (default 10: measured ICR at 10 is at
least that at 50, docs/BENCHMARKS.md). Pass ``--ours_opq_iter=50`` for the
same count on both sides.

RQ sampling: ours trains every RQ k-means on at most
``--ours_max_points_per_centroid`` (256, faiss's default) points per centroid
and then assigns all points; faiss gets ``--faiss_max_points_per_centroid``
(10000, the official value, which samples nothing at 200k; pass 256 for the
like-for-like row). ``--ours_devices=n`` runs ours on a mesh of n host CPU
devices.

OPQ recipe of ours: ``--ours_opq_fused`` (one jitted program),
``--ours_opq_rotation_init=pca``, ``--ours_opq_iter_pq0`` and
``--ours_opq_train_points`` and ``--ours_opq_pq_init`` set the
``QuantizerConfig`` switches of the same names; a flag not given leaves the
config's default (off / faiss's values), which only QuantizerConfig states.
``--ours_warm_encode`` passes ``fit_encode(warm_encode=True)``: the encoder's
programs are compiled in a background thread during the fit, so the first
encode ("encode s") compiles nothing (its compilations move into "SIDs s").

Compilations: ours' rows give the XLA compilation count, seconds and
persistent-cache hits of the build, the first encode and the N/2 encode.
``--compile_cache DIR`` runs ours twice, each in a fresh process, with JAX's
persistent compilation cache in a new empty folder under DIR: the cold row
(empty cache) and the warm row (a second process loading every program);
faiss runs in the parent process.

A ratio measured on a busy machine is not a measurement: the script refuses
to run when the 1-minute load average at start is above ``--max_load`` (2).

faiss is in the optional ``bench`` extra; keep it out of the main venv:

  python3 -m venv /tmp/benchvenv
  /tmp/benchvenv/bin/pip install faiss-cpu numpy jax jaxlib matplotlib psutil \
      -c constraints.txt && /tmp/benchvenv/bin/pip install --no-deps -e .
  JAX_PLATFORMS=cpu /tmp/benchvenv/bin/python benchmarks/sid_build.py \
      --n=200000 --dim=128 --memory_n=1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

OURS = "ours (JAX)"
OURS_COLD = "ours (JAX), cold process, empty compilation cache"
OURS_WARM = "ours (JAX), new process, warm compilation cache"


def make_embeddings(n: int, dim: int, seed: int, n_topics: int = 2000) -> np.ndarray:
  """Seeded clustered Gaussian mixture, [n, dim] float32 (two-level topics)."""
  rng = np.random.default_rng(seed)
  coarse = rng.normal(size=(64, dim)).astype(np.float32)
  fine = coarse[rng.integers(0, 64, n_topics)] + 0.5 * rng.normal(
    size=(n_topics, dim)
  ).astype(np.float32)
  labels = rng.integers(0, n_topics, n)
  x = np.empty((n, dim), np.float32)
  step = 100_000
  for s in range(0, n, step):
    e = min(n, s + step)
    x[s:e] = fine[labels[s:e]] + 0.3 * rng.normal(size=(e - s, dim)).astype(np.float32)
  return x


def _mse(r: np.ndarray) -> float:
  return float(np.mean(np.sum(r.astype(np.float64) ** 2, axis=1)))


def _step_logger(name, t0, marks=None):
  """Prints timed steps; records in ``marks`` when each RQ level ended."""

  def log(msg):
    t = time.perf_counter() - t0
    if marks is not None:
      marks[msg.split(":")[0].split(" (")[0]] = t
    print(f"  [{name} +{t:.1f}s] {msg}", file=sys.stderr, flush=True)

  return log


def _cpu_mesh(n_devices: int):
  """None for one device, else a 1-D mesh over ``n_devices`` CPU devices."""
  if n_devices <= 1:
    return None
  import jax

  return jax.make_mesh(
    (n_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
  )


class CompileCounter:
  """Counts XLA compilations (and their seconds) through ``jax.monitoring``;
  a persistent-cache hit still counts as one (its seconds are the load
  time) and is also counted in ``hits``."""

  def __init__(self):
    from jax import monitoring

    self.n, self.secs, self.hits = 0, 0.0, 0

    def on_duration(event, secs, **_):
      if event == "/jax/core/compile/backend_compile_duration":
        self.n += 1
        self.secs += secs

    def on_event(event, **_):
      if event == "/jax/compilation_cache/cache_hits":
        self.hits += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)

  def snapshot(self) -> tuple[int, float, int]:
    return self.n, self.secs, self.hits


_COUNTER: list[CompileCounter] = []


def compile_counter() -> CompileCounter:
  """The process's one ``CompileCounter`` (registered on first use)."""
  if not _COUNTER:
    _COUNTER.append(CompileCounter())
  return _COUNTER[0]


# QuantizerConfig fields set by --ours_<field> flags (None: the config's default).
OPQ_SWITCHES = (
  "opq_fused",
  "opq_rotation_init",
  "opq_iter_pq0",
  "opq_train_points",
  "opq_pq_init",
)


def ours_config(levels, l3_mode, seed, opq_iter, args):
  """The ``QuantizerConfig`` of ours from the command line."""
  from onesearch_jax.khqe import quantizer

  return quantizer.QuantizerConfig(
    levels=levels,
    l3_mode=l3_mode,
    opq_subspaces=2,
    opq_codes=256,
    n_iter=25,
    opq_iter=opq_iter,
    max_points_per_centroid=args.ours_max_points_per_centroid or None,
    seed=seed,
    # The OPQ recipe switches given on the command line; the others keep
    # QuantizerConfig's defaults (stated there only).
    **{
      field: getattr(args, f"ours_{field}")
      for field in OPQ_SWITCHES
      if getattr(args, f"ours_{field}") is not None
    },
  )


def run_ours(x, levels, l3_mode, seed, opq_iter, args):
  from onesearch_jax.khqe import quantizer

  cfg = ours_config(levels, l3_mode, seed, opq_iter, args)
  mesh = _cpu_mesh(args.ours_devices)
  counter = compile_counter()
  c0 = counter.snapshot()
  cpu0 = time.process_time()
  t0 = time.perf_counter()
  marks = {}
  q, codes, sq = quantizer.fit_encode(
    x,
    cfg,
    mesh=mesh,
    log=_step_logger("ours", t0, marks),
    warm_encode=args.ours_warm_encode,
  )
  t1 = time.perf_counter()
  c1, cpu1 = counter.snapshot(), time.process_time()
  # First call: includes compiling the encoder, unless --ours_warm_encode
  # compiled it during the fit.
  again = q.encode(x, mesh=mesh)
  t2 = time.perf_counter()
  c2, cpu2 = counter.snapshot(), time.process_time()
  q.encode(x[: len(x) // 2 + 1], mesh=mesh)  # another N: same compiled blocks
  t3 = time.perf_counter()
  c3 = counter.snapshot()
  if not np.array_equal(again, codes):
    print(
      f"  note: encode differs from the fit codes on "
      f"{int(np.sum(np.any(again != codes, axis=1)))} points",
      file=sys.stderr,
    )
  times = {
    "sids_s": t1 - t0,
    "rq_s": marks["RQ level 3"],
    "encode_s": t2 - t1,
    "encode_half_s": t3 - t2,
    "sids_cpu_s": cpu1 - cpu0,
    "encode_cpu_s": cpu2 - cpu1,
    # (compilations, their seconds, persistent-cache hits) per phase
    "compiles": [
      [b[0] - a[0], b[1] - a[1], b[2] - a[2]] for a, b in ((c0, c1), (c1, c2), (c2, c3))
    ],
  }
  return codes, times, quantizer.mean_errors(x, sq)


def run_ours_child(args, mode: str, cache_dir: str, label: str):
  """Runs ours in a fresh process with the persistent compilation cache at
  ``cache_dir``; returns (times, metrics, RQ-only metrics, errors)."""
  out = subprocess.run(
    [sys.executable, __file__, *sys.argv[1:], "--_ours_child", f"--_mode={mode}"],
    check=True,
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, "SID_BUILD_CACHE_DIR": cache_dir},
  )
  res = json.loads(out.stdout.strip().splitlines()[-1])
  print(f"done: {mode} {label} {res['times']}", file=sys.stderr, flush=True)
  return res["times"], res["m"], res["m_rq"], res["errs"]


def ours_child_main(args, levels) -> None:
  """``--_ours_child``: ours alone with the cache of $SID_BUILD_CACHE_DIR;
  prints one JSON line (times, CUR/ICR, errors)."""
  import jax

  jax.config.update("jax_compilation_cache_dir", os.environ["SID_BUILD_CACHE_DIR"])
  # Cache every program (JAX's defaults skip those compiled in < 1 s).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  from onesearch_jax.khqe import sid_metrics

  compile_counter()
  x = make_embeddings(args.n, args.dim, args.seed)
  codes, times, errs = run_ours(
    x, levels, args._mode, args.seed, args.ours_opq_iter, args
  )
  res = {
    "times": times,
    "m": sid_metrics.cur_icr(codes, levels),
    "m_rq": sid_metrics.cur_icr(codes[:, :3], levels),
    "errs": errs,
  }
  print(json.dumps(res))


def run_faiss(x, levels, l3_mode, seed, opq_iter, args):
  import faiss

  n, d = x.shape
  k1, k2, k3 = levels
  mppc = args.faiss_max_points_per_centroid
  t0 = time.perf_counter()
  marks = {}
  log = _step_logger("faiss", t0, marks)
  r = x.copy()
  codes = np.zeros((n, 5), np.int32)
  errs = {"input": _mse(x)}
  indexes = []
  for lvl, k in enumerate((k1, k2)):
    km = faiss.Kmeans(d, k, niter=25, max_points_per_centroid=mppc, seed=seed + lvl)
    km.train(r)
    _, a = km.index.search(r, 1)
    codes[:, lvl] = a[:, 0]
    r -= km.centroids[a[:, 0]]
    errs[f"l{lvl + 1}"] = _mse(r)
    indexes.append(km)
    log(f"RQ level {lvl + 1}: k={k}")
  l3 = {}
  if l3_mode == "global":
    km = faiss.Kmeans(d, k3, niter=25, max_points_per_centroid=mppc, seed=seed + 2)
    km.train(r)
    _, a = km.index.search(r, 1)
    codes[:, 2] = a[:, 0]
    r -= km.centroids[a[:, 0]]
    l3[None] = km
  else:  # the official --balanced 2 loop over level-2 parents
    b = codes[:, 1]
    for g in range(k2):
      idx = np.nonzero(b == g)[0]
      if idx.size == 0:
        continue
      if idx.size <= k3:
        codes[idx, 2] = np.arange(idx.size)
        r[idx] = 0.0
        continue
      sub = np.ascontiguousarray(r[idx])
      km = faiss.Kmeans(d, k3, niter=25, max_points_per_centroid=mppc, seed=seed + 2)
      km.train(sub)
      _, a = km.index.search(sub, 1)
      codes[idx, 2] = a[:, 0]
      r[idx] = sub - km.centroids[a[:, 0]]
      l3[g] = km
  errs["l3"] = _mse(r)
  log(f"RQ level 3 ({l3_mode}): k={k3}")
  index = faiss.index_factory(d, "OPQ2,IVF1,PQ2x8", faiss.METRIC_INNER_PRODUCT)
  opq = faiss.downcast_VectorTransform(index.chain.at(0))
  opq.niter = opq_iter
  ivfpq = faiss.downcast_index(faiss.extract_index_ivf(index))
  index.train(r)
  log("OPQ2,IVF1,PQ2x8 trained")
  centroid = ivfpq.quantizer.reconstruct(0)

  def opq_codes(res):
    rr = opq.apply_py(res)
    pq = ivfpq.pq.compute_codes(np.ascontiguousarray(rr - centroid))
    return pq, rr

  pq_codes, rr = opq_codes(r)
  codes[:, 3:] = pq_codes[:, :2]
  rec = ivfpq.pq.decode(pq_codes) + centroid
  errs["opq"] = _mse(rr - rec)
  t1 = time.perf_counter()

  def encode(y):
    """Re-encodes y with the fitted indexes (the new-items path)."""
    y = y.copy()
    out = np.zeros((len(y), 5), np.int32)
    for lvl, km in enumerate(indexes):
      _, a = km.index.search(y, 1)
      out[:, lvl] = a[:, 0]
      y -= km.centroids[a[:, 0]]
    if None in l3:
      _, a = l3[None].index.search(y, 1)
      out[:, 2] = a[:, 0]
      y -= l3[None].centroids[a[:, 0]]
    else:
      for g, km in l3.items():
        idx = np.nonzero(out[:, 1] == g)[0]
        if idx.size:
          sub = np.ascontiguousarray(y[idx])
          _, a = km.index.search(sub, 1)
          out[idx, 2] = a[:, 0]
          y[idx] = sub - km.centroids[a[:, 0]]
    out[:, 3:] = opq_codes(y)[0][:, :2]
    return out

  encode(x)
  t2 = time.perf_counter()
  encode(x[: len(x) // 2 + 1])
  t3 = time.perf_counter()
  times = {
    "sids_s": t1 - t0,
    "rq_s": marks["RQ level 3"],
    "encode_s": t2 - t1,
    "encode_half_s": t3 - t2,
  }
  return codes, times, errs


def memory_probe(n: int, dim: int, levels, seed: int, n_iter: int, opq_iter: int):
  """Fits and re-encodes n x dim with our pipeline; prints times, peak RSS."""
  from onesearch_jax.khqe import quantizer

  x = make_embeddings(n, dim, seed)
  cfg = quantizer.QuantizerConfig(
    levels=levels,
    l3_mode="parent",
    opq_subspaces=2,
    opq_codes=256,
    n_iter=n_iter,
    opq_iter=opq_iter,
    seed=seed,
  )
  t0 = time.perf_counter()
  marks = {}
  q, _, _ = quantizer.fit_encode(x, cfg, log=_step_logger("probe", t0, marks))
  t1 = time.perf_counter()
  q.encode(x)
  t2 = time.perf_counter()
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(
    json.dumps(
      {
        "n": n,
        "dim": dim,
        "levels": levels,
        "peak_rss_mb": peak_mb,
        "input_mb": x.nbytes / 2**20,
        "n_iter": n_iter,
        "opq_iter": opq_iter,
        "sids_s": t1 - t0,
        "rq_s": marks["RQ level 3"],
        "encode_s": t2 - t1,
      }
    )
  )


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=200_000)
  p.add_argument("--dim", type=int, default=128)
  p.add_argument(
    "--levels",
    default="512-128-64",
    help="k1-k2-k3 (default: QuantizerConfig.scaled(200k))",
  )
  p.add_argument("--l3_modes", default="parent,global")
  p.add_argument("--opq_iter", type=int, default=50, help="faiss OPQ niter")
  p.add_argument("--ours_opq_iter", type=int, default=10, help="our OPQ alternations")
  p.add_argument(
    "--ours_max_points_per_centroid",
    type=int,
    default=256,
    help="our RQ k-means train on at most this many points per centroid "
    "(QuantizerConfig.max_points_per_centroid; 0 = all points)",
  )
  p.add_argument(
    "--ours_opq_fused",
    action="store_const",
    const=True,
    default=None,
    help="fit our OPQ in one jitted program (QuantizerConfig.opq_fused)",
  )
  p.add_argument(
    "--ours_opq_rotation_init",
    default=None,
    choices=("random", "pca"),
    help="our OPQ start rotation (default: QuantizerConfig.opq_rotation_init)",
  )
  p.add_argument(
    "--ours_opq_iter_pq0",
    type=int,
    default=None,
    help="Lloyd iterations of our first OPQ alternation "
    "(default: QuantizerConfig.opq_iter_pq0, faiss's 40)",
  )
  p.add_argument(
    "--ours_opq_train_points",
    type=int,
    default=None,
    help="our OPQ training sample (default: QuantizerConfig.opq_train_points)",
  )
  p.add_argument(
    "--ours_opq_pq_init",
    default=None,
    choices=("kmeans++", "random"),
    help="init of our OPQ PQ k-means (default: QuantizerConfig.opq_pq_init)",
  )
  p.add_argument(
    "--ours_warm_encode",
    action="store_true",
    help="compile our encoder's programs in a background thread while the "
    "fit runs (quantizer.fit_encode(warm_encode=True)), so the first "
    "encode compiles nothing",
  )
  p.add_argument(
    "--compile_cache",
    default="",
    help="if set, run ours twice, each in a fresh process, with JAX's "
    "persistent compilation cache in a new empty folder under this one: the "
    "cold row (empty cache: compiles and writes it) and the warm row (a "
    "second process that loads every program from the cache)",
  )
  p.add_argument("--_ours_child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--_mode", default="", help=argparse.SUPPRESS)
  p.add_argument(
    "--faiss_max_points_per_centroid",
    type=int,
    default=10000,
    help="faiss.Kmeans max_points_per_centroid (10000: the official code, "
    "no sampling at these sizes; 256: faiss's default)",
  )
  p.add_argument(
    "--ours_devices",
    type=int,
    default=1,
    help="CPU devices our fit and encode are sharded over (a mesh of this "
    "many host devices; faiss uses all cores through OpenMP)",
  )
  p.add_argument(
    "--max_load",
    type=float,
    default=2.0,
    help="refuse to run above this 1-min load average at start",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument(
    "--memory_n",
    type=int,
    default=0,
    help="if > 0, also measure peak RSS of ours on this N",
  )
  p.add_argument("--memory_levels", default="1024-256-128")
  p.add_argument("--memory_iters", type=int, default=25)
  p.add_argument("--_memory_child", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args()
  levels = tuple(int(v) for v in args.levels.split("-"))
  if args.ours_devices > 1:  # before anything imports jax
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "")
      + f" --xla_force_host_platform_device_count={args.ours_devices}"
    )
  if args._ours_child:
    ours_child_main(args, levels)
    return
  if args._memory_child:
    memory_probe(
      args.n, args.dim, levels, args.seed, args.memory_iters, args.ours_opq_iter
    )
    return

  from onesearch_jax.khqe import sid_metrics

  load_start = os.getloadavg()
  if load_start[0] > args.max_load:
    print(
      f"refusing to measure: 1-min load average {load_start[0]:.2f} > "
      f"{args.max_load} (a ratio measured on a busy machine is not a "
      "measurement); wait for an idle machine or raise --max_load",
      file=sys.stderr,
    )
    sys.exit(3)
  x = make_embeddings(args.n, args.dim, args.seed)
  rows = []
  cpu_start = time.process_time()
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  for mode in args.l3_modes.split(","):
    if args.compile_cache:
      os.makedirs(args.compile_cache, exist_ok=True)
      cache = tempfile.mkdtemp(prefix="sid_build_", dir=args.compile_cache)
      for label in (OURS_COLD, OURS_WARM):
        rows.append((mode, label, *run_ours_child(args, mode, cache, label)))
      print(
        f"compilation cache: {cache} ({len(os.listdir(cache))} entries)",
        file=sys.stderr,
      )
    compile_counter()
    for name, fn, opq_iter in (
      (OURS, run_ours, args.ours_opq_iter),
      ("faiss", run_faiss, args.opq_iter),
    ):
      if args.compile_cache and fn is run_ours:
        continue
      codes, times, errs = fn(x, levels, mode, args.seed, opq_iter, args)
      m = sid_metrics.cur_icr(codes, levels)
      m_rq = sid_metrics.cur_icr(codes[:, :3], levels)
      rows.append((mode, name, times, m, m_rq, errs))
      print(f"done: {mode} {name} {times}", file=sys.stderr, flush=True)
  load = os.getloadavg()
  child_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu_total = (time.process_time() - cpu_start) + (
    child_cpu.ru_utime + child_cpu.ru_stime - children.ru_utime - children.ru_stime
  )
  ours = ours_config(levels, "parent", args.seed, args.ours_opq_iter, args)
  print(
    f"\nN={args.n} D={args.dim} levels={args.levels} OPQ 2x256, "
    f"OPQ alternations ours {args.ours_opq_iter} / faiss {args.opq_iter}; "
    f"max_points_per_centroid ours {args.ours_max_points_per_centroid or 'all'}"
    f" / faiss {args.faiss_max_points_per_centroid}; ours on "
    f"{args.ours_devices} CPU device(s); "
    f"machine: {platform.machine()}, "
    f"{os.cpu_count()} CPU cores; load average (1/5/15 min) at start "
    f"{load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, at end "
    f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; CPU seconds of the run "
    f"(this process and its children) {cpu_total:.1f}; ours' OPQ: "
    f"{'fused' if ours.opq_fused else 'per alternation'}, "
    f"{ours.opq_rotation_init} start, first alternation "
    f"{ours.opq_iter_pq0} Lloyd iterations, "
    f"{ours.opq_train_points} training points, "
    f"{ours.opq_pq_init} PQ init; ours' encoder warm-up during the fit: "
    f"{'on' if args.ours_warm_encode else 'off'}\n"
  )
  print(
    "| L3 | impl | SIDs s | RQ s | encode s | encode N/2 s | CUR_L1 |"
    " CUR_L1xL2 | CUR_Total (RQ) | ICR (RQ) | ICR (RQ+OPQ) | err L1 | err L2 |"
    " err L3 | err OPQ | CPU s (SIDs / encode) | compiles (SIDs / encode /"
    " N/2: n, s, cache hits) |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for mode, name, t, m, m_rq, e in rows:
    cpu = (
      f"{t['sids_cpu_s']:.1f} / {t['encode_cpu_s']:.2f}" if "sids_cpu_s" in t else ""
    )
    comp = " / ".join(f"{n}, {s:.1f}, {h}" for n, s, h in t.get("compiles", []))
    print(
      f"| {mode} | {name} | {t['sids_s']:.1f} | {t['rq_s']:.1f} "
      f"| {t['encode_s']:.2f} "
      f"| {t['encode_half_s']:.2f} "
      f"| {m['CUR_L1']:.2%} | {m['CUR_L1xL2']:.2%} | {m_rq['CUR_Total']:.2%} "
      f"| {m_rq['ICR']:.2%} | {m['ICR']:.2%} | {e['l1']:.4g} | {e['l2']:.4g} "
      f"| {e['l3']:.4g} | {e['opq']:.4g} | {cpu} | {comp} |"
    )
  for mode in args.l3_modes.split(","):
    t = {r[1]: r[2] for r in rows if r[0] == mode}
    theirs = t["faiss"]
    for name in (OURS, OURS_COLD, OURS_WARM):
      if name not in t:
        continue
      ours = t[name]
      print(
        f"\nL3={mode}: {name} / faiss: SIDs "
        f"{ours['sids_s'] / theirs['sids_s']:.2f}x "
        f"(RQ {ours['rq_s'] / theirs['rq_s']:.2f}x), "
        f"encode {ours['encode_s'] / theirs['encode_s']:.2f}x, encode N/2 "
        f"{ours['encode_half_s'] / theirs['encode_half_s']:.2f}x"
      )
  if args.memory_n:
    out = subprocess.run(
      [
        sys.executable,
        __file__,
        "--_memory_child",
        f"--n={args.memory_n}",
        f"--dim={args.dim}",
        f"--levels={args.memory_levels}",
        f"--seed={args.seed}",
        f"--memory_iters={args.memory_iters}",
        f"--ours_opq_iter={args.ours_opq_iter}",
      ],
      check=True,
      capture_output=True,
      text=True,
    )
    print("\nmemory probe (ours, fresh process):", out.stdout.strip())


if __name__ == "__main__":
  main()
