"""Preference examples for the two PARS phases (SPEC §4.3).

Phase 1 (RM-guided): for sampled logged train sessions, the generator
(`generate_fn(model, prompts) -> (tokens [B, W, S], scores [B, W])`,
injected: the trie beam search) proposes W candidate SIDs; they are mapped
to items (sid_tokens.ItemLookup; no item -> invalid) and re-ranked by
R_score. The chosen item is the best logged positive among the candidates
(levels purchase / rec-purchase / click, best level first, then R_score),
else the RM's top-1. A sample is KEPT only when the order changed at the
top, i.e. the chosen item was not the generator's first candidate (our
reading of "keep only samples whose order changed"; counted in the stats).
The rejected items are the K candidates with the lowest R_score among those
the RM demoted (RM rank below generator rank), filled with the next lowest
R_score candidates; logged positives are never rejected. Invalid SIDs have
R_score -inf, so they are rejected first.

Phase 2 (real interactions): for each train session with a logged positive
(top-3 levels: purchase, rec-category purchase proxy, click), up to
`max_positives` positives (best level first, then reward) each become one
example whose K rejected items come from the bottom-3 levels: slot j
prefers level (exposed, same-category-unshown, other-category)[j % 3] and
falls back to the other pools; sampled unshown items are re-checked with
RewardTable.levels so a sample that is in fact a positive is never used.

Both phases produce `PreferenceExamples` (tokens + rewards); `batch_stream`
turns them into listwise.make_batch batches with a deterministic,
resumable order (position -> batch).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from onesearch_jax.pars import listwise, rerank, rewards
from onesearch_jax.pars.logs import InteractionLog
from onesearch_jax.pars.sid_tokens import ItemLookup, SidCodec

PromptFn = Callable[[Sequence[str]], Mapping[str, np.ndarray]]
GenerateFn = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PhaseDataConfig:
  """How preference examples are built."""

  num_negatives: int = 3  # K rejected per example
  max_positives: int = 2  # phase 2: examples per session at most
  phase1_sessions: int = 512  # phase 1: sampled train sessions
  generate_batch: int = 32  # phase 1: sessions per generate_fn call
  # phase 1's rejected items: "rm_demoted" (the K lowest-R_score candidates
  # the RM demoted) or "above_chosen" (the candidates the generator ranked
  # above the chosen one, best generator rank first, then rm_demoted's fill)
  # or "distill" (every session's list in the reward model's order: slot 0 =
  # its top candidate, then the next K; `rewards` = the RM sort keys, the
  # teacher of ListwiseConfig.kind = "distill"; sessions whose top the
  # generator already ranks first are kept)
  phase1_rejected: str = "above_chosen"
  # phase 2's rejected items: "levels" (one per negative level in turn: an
  # exposed-not-clicked item, an unshown item of the session's category, one
  # of another category) or "exposed" (the session's exposed-not-clicked items
  # only: the impression contrast a CTR model learns from; a positive of a
  # session without one is counted and skipped)
  phase2_rejected: str = "levels"
  # phase 1's session pool: "train" (every train session) or "unclicked"
  # (train sessions without a click: prompts whose session the SFT model never
  # had as a target, the nearest the train split has to fresh traffic)
  phase1_pool: str = "train"
  seed: int = 0

  def __post_init__(self):
    if self.num_negatives < 1 or self.max_positives < 1:
      raise ValueError("num_negatives and max_positives must be >= 1")
    if self.phase1_rejected not in REJECTED_MODES:
      raise ValueError(
        f"PhaseDataConfig.phase1_rejected must be one of {REJECTED_MODES}: "
        f"{self.phase1_rejected!r}"
      )
    if self.phase2_rejected not in PHASE2_REJECTED_MODES:
      raise ValueError(
        f"PhaseDataConfig.phase2_rejected must be one of {PHASE2_REJECTED_MODES}: "
        f"{self.phase2_rejected!r}"
      )
    if self.phase1_pool not in PHASE1_POOLS:
      raise ValueError(
        f"PhaseDataConfig.phase1_pool must be one of {PHASE1_POOLS}: "
        f"{self.phase1_pool!r}"
      )


REJECTED_MODES = ("rm_demoted", "above_chosen", "distill")
PHASE2_REJECTED_MODES = ("levels", "exposed")
PHASE1_POOLS = ("train", "unclicked")


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceExamples:
  """E examples: session rows, chosen/rejected SID tokens, rewards, levels."""

  session: np.ndarray  # [E] int32 session rows of the log
  chosen: np.ndarray  # [E, S] int32 tokens
  rejected: np.ndarray  # [E, K, S] int32 tokens
  rejected_mask: np.ndarray  # [E, K] bool
  rewards: np.ndarray  # [E, 1+K] float32 r(q, i)
  levels: np.ndarray  # [E, 1+K] int32 interaction levels (-1 absent)
  stats: dict[str, int]

  def __len__(self) -> int:
    return int(self.session.shape[0])

  @classmethod
  def empty(cls, k: int, s: int, stats=None) -> PreferenceExamples:
    return cls(
      np.zeros(0, np.int32),
      np.zeros((0, s), np.int32),
      np.zeros((0, k, s), np.int32),
      np.zeros((0, k), bool),
      np.zeros((0, k + 1), np.float32),
      np.zeros((0, k + 1), np.int32),
      dict(stats or {}),
    )

  @classmethod
  def concat(cls, parts: Sequence[PreferenceExamples]) -> PreferenceExamples:
    stats: collections.Counter = collections.Counter()
    for p in parts:
      stats.update(p.stats)
    return cls(
      *(np.concatenate([getattr(p, f) for p in parts]) for f in
        ("session", "chosen", "rejected", "rejected_mask", "rewards", "levels")),
      dict(stats),
    )  # fmt: skip

  def save(self, path) -> None:
    np.savez(
      path,
      session=self.session,
      chosen=self.chosen,
      rejected=self.rejected,
      rejected_mask=self.rejected_mask,
      rewards=self.rewards,
      levels=self.levels,
      stats_keys=np.asarray(list(self.stats), dtype=object),
      stats_vals=np.asarray(list(self.stats.values()), np.int64),
    )

  @classmethod
  def load(cls, path) -> PreferenceExamples:
    z = np.load(path, allow_pickle=True)
    stats = {
      str(k): int(v) for k, v in zip(z["stats_keys"], z["stats_vals"], strict=True)
    }
    return cls(
      z["session"], z["chosen"], z["rejected"], z["rejected_mask"], z["rewards"],
      z["levels"], stats,
    )  # fmt: skip


# ---------------------------------------------------------------- phase 2


def group_keys(keys: np.ndarray, n: int, n_groups: int) -> list[np.ndarray]:
  """Sorted keys g * n + item -> per-group item arrays."""
  g = keys // n
  bounds = np.searchsorted(g, np.arange(n_groups + 1))
  items = keys % n
  return [items[bounds[i] : bounds[i + 1]] for i in range(n_groups)]


def logged_examples(
  interactions: InteractionLog,
  table: rewards.RewardTable,
  codec: SidCodec,
  cfg: PhaseDataConfig = PhaseDataConfig(),
) -> PreferenceExamples:
  """Phase 2: positives = top-3 levels, negatives = bottom-3 (train split)."""
  rng = np.random.default_rng(cfg.seed)
  n, k = interactions.n_items, cfg.num_negatives
  stats: collections.Counter = collections.Counter()
  bought = group_keys(interactions.purchased_keys, n, interactions.n_sessions)
  clicked = group_keys(interactions.clicked_keys, n, interactions.n_sessions)
  shown = group_keys(interactions.impressed_keys, n, interactions.n_sessions)
  user_bought = group_keys(
    interactions.user_train_purchase_keys, n, len(interactions.user_ids)
  )
  by_l3 = collections.defaultdict(list)
  for i in np.flatnonzero(interactions.has_sid):
    by_l3[int(interactions.item_l3[i])].append(i)
  by_l3 = {c: np.asarray(v) for c, v in by_l3.items()}
  sid_items = np.flatnonzero(interactions.has_sid)
  rows = []
  for s in np.flatnonzero(interactions.session_train):
    cand = np.unique(
      np.concatenate([bought[s], clicked[s], user_bought[interactions.session_user[s]]])
    )
    cand = cand[interactions.has_sid[cand]]
    lv = table.levels(np.full(cand.shape, s), cand)
    pos_mask = np.isin(lv, rewards.POSITIVE_LEVELS)
    if not pos_mask.any():
      stats["sessions_without_positive"] += 1
      continue
    pos, pos_lv = cand[pos_mask], lv[pos_mask]
    pos_r = table.rewards(np.full(pos.shape, s), pos)
    order = np.lexsort((-pos_r, pos_lv))[: cfg.max_positives]
    # Negative pools by level.
    sh = shown[s][interactions.has_sid[shown[s]]]
    sh = sh[table.levels(np.full(sh.shape, s), sh) == rewards.EXPOSED]
    cat = int(interactions.session_l3[s])
    same = by_l3.get(cat, np.zeros(0, np.int64))
    same = (
      rng.choice(same, size=min(same.size, 4 * k), replace=False) if same.size else same
    )
    other = rng.choice(sid_items, size=min(sid_items.size, 4 * k), replace=False)
    pools = {rewards.EXPOSED: rng.permutation(sh)}
    for items in (same, other):
      lv_i = table.levels(np.full(items.shape, s), items)
      for level in (rewards.SAME_CATEGORY, rewards.OTHER_CATEGORY):
        extra = items[lv_i == level]
        pools[level] = np.concatenate([pools.get(level, np.zeros(0, np.int64)), extra])
    for level in pools:
      pools[level] = list(dict.fromkeys(int(x) for x in pools[level]))
    for j in order:
      if cfg.phase2_rejected == "exposed":
        picked = [int(x) for x in pools[rewards.EXPOSED][:k]]
        if not picked:
          stats["positives_without_exposed"] += 1
          continue
        rows.append((s, int(pos[j]), picked))
        continue
      picked, used = [], set()
      for slot in range(k):
        pref = rewards.NEGATIVE_LEVELS[slot % 3]
        for level in (pref, *rewards.NEGATIVE_LEVELS):
          avail = [x for x in pools[level] if x not in used]
          if avail:
            picked.append(avail[0])
            used.add(avail[0])
            break
      if not picked:
        stats["positives_without_negative"] += 1
        continue
      rows.append((s, int(pos[j]), picked))
  stats["sessions_train"] = int(interactions.session_train.sum())
  stats["examples"] = len(rows)
  return _examples_from_items(interactions, table, codec, rows, k, dict(stats))


def _examples_from_items(
  interactions, table, codec, rows, k, stats
) -> PreferenceExamples:
  s_len = interactions.code_width
  if not rows:
    return PreferenceExamples.empty(k, s_len, stats)
  e = len(rows)
  session = np.asarray([r[0] for r in rows], np.int32)
  items = np.full((e, 1 + k), -1, np.int64)
  for x, (_, c, rej) in enumerate(rows):
    items[x, 0] = c
    items[x, 1 : 1 + len(rej)] = rej
  present = items >= 0
  codes = interactions.item_codes[np.maximum(items, 0)]
  toks = codec.tokens(np.maximum(codes, 0))
  lv = np.where(present, table.levels(session[:, None], items), -1)
  rw = np.where(present, table.rewards(session[:, None], items), 0.0)
  return PreferenceExamples(
    session=session,
    chosen=toks[:, 0],
    rejected=toks[:, 1:],
    rejected_mask=present[:, 1:],
    rewards=rw.astype(np.float32),
    levels=lv.astype(np.int32),
    stats=stats,
  )


# ---------------------------------------------------------------- phase 1


def rm_guided_from_candidates(
  session: np.ndarray,
  tokens: np.ndarray,
  gen_scores: np.ndarray,
  score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
  table: rewards.RewardTable,
  codec: SidCodec,
  lookup: ItemLookup,
  num_negatives: int,
  rejected: str = "rm_demoted",
  gen_weight: float = 0.0,
) -> PreferenceExamples:
  """Phase-1 examples from one batch of generated candidates.

  Args:
    session: [B] session rows.
    tokens: [B, W, S] generated SID tokens.
    gen_scores: [B, W] generator scores (higher = better).
    score_fn: (session [B, 1], items [B, W]) -> R_score [B, W] (-inf for
      item -1), e.g. TrainedRewardModel.score(...)['r_score'].
    table: calibrated rewards / levels.
    codec, lookup: tokens -> items.
    num_negatives: K.
    rejected: "rm_demoted" or "above_chosen" (PhaseDataConfig.phase1_rejected).
    gen_weight: the RM order sorts R_score + gen_weight · gen_scores
      (RScoreConfig.gen_weight).

  Returns:
    The kept examples (stats: generated, kept, unchanged, invalid_sids, ...).
  """
  session = np.asarray(session, np.int64)
  tokens = np.asarray(tokens, np.int32)
  b, w, _ = tokens.shape
  k = num_negatives
  codes, valid = codec.codes(tokens)
  items = lookup.lookup(codes, valid)  # [B, W]
  r = np.asarray(score_fn(session[:, None], items), np.float64)
  r = rerank.sort_key(np.where(items >= 0, r, -np.inf), gen_scores, gen_weight)
  gen_order = np.argsort(-np.asarray(gen_scores, np.float64), axis=1, kind="stable")
  gen_rank = np.empty_like(gen_order)
  np.put_along_axis(gen_rank, gen_order, np.arange(w)[None].repeat(b, 0), axis=1)
  # RM order: R_score desc, ties by generator rank.
  rm_order = np.lexsort((gen_rank, -r), axis=1) if b else gen_order
  rm_rank = np.empty_like(rm_order)
  np.put_along_axis(rm_rank, rm_order, np.arange(w)[None].repeat(b, 0), axis=1)
  levels = table.levels(session[:, None], items)
  logged_pos = np.isin(levels, rewards.POSITIVE_LEVELS) & (items >= 0)
  stats = collections.Counter(
    generated=b, candidates=b * w, invalid_sids=int((items < 0).sum())
  )
  if rejected == "distill":
    return _distill_lists(
      session, tokens, items, r, rm_order, gen_rank, k, table, stats
    )
  rows_tok, rows_rej, rows_mask, rows_items, rows_s = [], [], [], [], []
  for x in range(b):
    if logged_pos[x].any():
      cand = np.flatnonzero(logged_pos[x])
      chosen = int(cand[np.lexsort((rm_rank[x, cand], levels[x, cand]))[0]])
      stats["chosen_logged_positive"] += 1
    else:
      chosen = int(rm_order[x, 0])
    if not np.isfinite(r[x, chosen]):
      stats["no_valid_candidate"] += 1
      continue
    if gen_rank[x, chosen] == 0:
      stats["unchanged"] += 1
      continue
    others = [j for j in range(w) if j != chosen and not logged_pos[x, j]]
    demoted = [j for j in others if rm_rank[x, j] > gen_rank[x, j]]
    rest = [j for j in others if j not in demoted]
    by_low = sorted(demoted, key=lambda j: rm_rank[x, j], reverse=True)
    by_low += sorted(rest, key=lambda j: rm_rank[x, j], reverse=True)
    if rejected == "above_chosen":
      above = sorted(
        (j for j in others if gen_rank[x, j] < gen_rank[x, chosen]),
        key=lambda j: gen_rank[x, j],
      )
      by_low = above + [j for j in by_low if j not in above]
    rej = by_low[:k]
    if not rej:
      stats["no_rejected"] += 1
      continue
    mask = np.zeros(k, bool)
    mask[: len(rej)] = True
    rej_tok = np.zeros((k, tokens.shape[2]), np.int32)
    rej_tok[: len(rej)] = tokens[x, rej]
    row_items = np.full(1 + k, -1, np.int64)
    row_items[0] = items[x, chosen]
    row_items[1 : 1 + len(rej)] = items[x, rej]
    rows_tok.append(tokens[x, chosen])
    rows_rej.append(rej_tok)
    rows_mask.append(mask)
    rows_items.append(row_items)
    rows_s.append(session[x])
  stats["kept"] = len(rows_s)
  if not rows_s:
    return PreferenceExamples.empty(k, tokens.shape[2], dict(stats))
  sess = np.asarray(rows_s, np.int32)
  it = np.stack(rows_items)
  slot = np.concatenate([np.ones((len(sess), 1), bool), np.stack(rows_mask)], 1)
  lv = np.where(slot, table.levels(sess[:, None], it), -1)
  rw = np.where(slot, table.rewards(sess[:, None], it), 0.0)
  return PreferenceExamples(
    session=sess,
    chosen=np.stack(rows_tok),
    rejected=np.stack(rows_rej),
    rejected_mask=np.stack(rows_mask),
    rewards=rw.astype(np.float32),
    levels=lv.astype(np.int32),
    stats=dict(stats),
  )


def _distill_lists(session, tokens, items, keys, rm_order, gen_rank, k, table, stats):
  """phase1_rejected = "distill": each session's candidates in the RM order.

  Slot 0 = the RM's top valid candidate, slots 1..K = the next valid ones;
  `rewards` = their sort keys (the distillation teacher). A session needs
  two valid candidates.
  """
  b, w, s_len = tokens.shape
  rows = []
  for x in range(b):
    order = [j for j in rm_order[x] if np.isfinite(keys[x, j])][: 1 + k]
    if len(order) < 2:
      stats["no_valid_candidate" if not order else "no_rejected"] += 1
      continue
    if gen_rank[x, order[0]] == 0:
      stats["unchanged"] += 1
    rows.append((x, order))
  stats["kept"] = len(rows)
  if not rows:
    return PreferenceExamples.empty(k, s_len, dict(stats))
  e = len(rows)
  toks = np.zeros((e, 1 + k, s_len), np.int32)
  slot = np.zeros((e, 1 + k), bool)
  it = np.full((e, 1 + k), -1, np.int64)
  key = np.zeros((e, 1 + k), np.float32)
  for r_, (x, order) in enumerate(rows):
    n = len(order)
    toks[r_, :n] = tokens[x, order]
    slot[r_, :n] = True
    it[r_, :n] = items[x, order]
    key[r_, :n] = keys[x, order]
  sess = session[[x for x, _ in rows]].astype(np.int32)
  lv = np.where(slot, table.levels(sess[:, None], it), -1)
  return PreferenceExamples(
    session=sess,
    chosen=toks[:, 0],
    rejected=toks[:, 1:],
    rejected_mask=slot[:, 1:],
    rewards=key,
    levels=lv.astype(np.int32),
    stats=dict(stats),
  )


def phase1_pool(interactions: InteractionLog, pool: str) -> np.ndarray:
  """The session rows phase 1 samples from (PhaseDataConfig.phase1_pool).

  Returns:
    [P] int64 sorted session rows: the train sessions, or for "unclicked" the
    train sessions with no click (a purchase implies a click in the log).
  """
  train = interactions.session_train.copy()
  if pool == "unclicked":
    clicked = np.unique(interactions.clicked_keys // interactions.n_items)
    train[clicked] = False
  return np.flatnonzero(train)


def rm_guided_examples(
  interactions: InteractionLog,
  table: rewards.RewardTable,
  codec: SidCodec,
  lookup: ItemLookup,
  score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
  prompt_fn: PromptFn,
  generate: Callable[[Mapping[str, np.ndarray]], tuple[np.ndarray, np.ndarray]],
  cfg: PhaseDataConfig = PhaseDataConfig(),
  gen_weight: float = 0.0,
) -> PreferenceExamples:
  """Phase 1 over `cfg.phase1_sessions` sampled train sessions.

  Args:
    generate: prompts batch -> (tokens [B, W, S], scores [B, W]) (the
      caller binds the model: `lambda b: generate_fn(model, b)`).
    (others as rm_guided_from_candidates / batch_stream)
  """
  rng = np.random.default_rng(cfg.seed)
  train = phase1_pool(interactions, cfg.phase1_pool)
  n = min(cfg.phase1_sessions, train.size)
  picked = np.sort(rng.choice(train, size=n, replace=False)) if n else train[:0]
  parts = []
  for a in range(0, n, cfg.generate_batch):
    rows = picked[a : a + cfg.generate_batch]
    prompts = prompt_fn([interactions.session_ids[i] for i in rows])
    tokens, scores = generate(prompts)
    parts.append(
      rm_guided_from_candidates(
        rows,
        tokens,
        scores,
        score_fn,
        table,
        codec,
        lookup,
        cfg.num_negatives,
        cfg.phase1_rejected,
        gen_weight,
      )  # fmt: skip
    )
  if not parts:
    return PreferenceExamples.empty(
      cfg.num_negatives, interactions.code_width, {"generated": 0}
    )
  return PreferenceExamples.concat(parts)


# ---------------------------------------------------------------- batches


def batch_stream(
  examples: PreferenceExamples,
  interactions: InteractionLog,
  prompt_fn: PromptFn,
  batch_size: int,
  seed: int = 0,
) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
  """position -> iterator of listwise batches from that position on (forever).

  Batch p holds the examples perm_e[(p % nb) * B : ...] of epoch e = p // nb
  (perm_e = a permutation seeded by (seed, e)); a short last batch is padded
  with example_weight 0 rows, so every batch has exactly `batch_size` rows.
  """
  e = len(examples)
  if e == 0:
    raise ValueError("batch_stream: no preference examples")

  def make(p: int) -> dict[str, np.ndarray]:
    idx, weight = batch_rows(e, batch_size, seed, p)
    prompts = prompt_fn([interactions.session_ids[i] for i in examples.session[idx]])
    return listwise.make_batch(
      prompts,
      examples.chosen[idx],
      examples.rejected[idx],
      examples.rewards[idx],
      examples.rejected_mask[idx],
      weight,
    )

  return positions(make)


def batch_rows(
  n: int, batch_size: int, seed: int, position: int
) -> tuple[np.ndarray, np.ndarray]:
  """The rows of batch `position` over n examples, and their weights.

  Batch p holds perm_e[(p % nb)·B : (p % nb + 1)·B] of epoch e = p // nb,
  nb = ceil(n / B), perm_e a permutation seeded by (seed, e); a short last
  batch is filled from perm_e with weight 0.

  Returns:
    (rows [B] int, weights [B] float32: 1 real, 0 filler).
  """
  nb = -(-n // batch_size)
  epoch, j = divmod(position, nb)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  idx = perm[j * batch_size : (j + 1) * batch_size]
  weight = np.ones(batch_size, np.float32)
  if idx.size < batch_size:
    weight[idx.size :] = 0.0
    idx = np.concatenate([idx, np.resize(perm, batch_size - idx.size)])
  return idx, weight


def positions(
  make: Callable[[int], dict[str, np.ndarray]],
) -> Callable[[int], Iterator[dict[str, np.ndarray]]]:
  """position -> the endless iterator make(position), make(position + 1), ..."""

  def stream(position: int) -> Iterator[dict[str, np.ndarray]]:
    p = position
    while True:
      yield make(p)
      p += 1

  return stream
