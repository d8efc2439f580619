"""SidItemIndex against a brute-force Python expansion and the artefact."""

from __future__ import annotations

import numpy as np
import pytest

from onesearch_jax.eval.sid_items import SidItemIndex


def _random_catalogue(seed: int, n: int = 60):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, 3, size=(n, 3))  # many collisions
  pop = rng.integers(0, 4, size=n).astype(float)  # many popularity ties
  ids = [f"it{int(x)}" for x in rng.permutation(n * 3)[:n]]
  return ids, codes, pop


def _brute_groups(ids, codes, pop):
  groups = {}
  for i, row in enumerate(codes.tolist()):
    groups.setdefault(tuple(row), []).append(i)
  keys = sorted(groups)
  return keys, [sorted(groups[k], key=lambda i: (-pop[i], ids[i])) for k in keys]


def _brute_expand(keys, groups, sid_row, k_max):
  out, seen, dups = [], set(), 0
  for s in sid_row:
    if s < 0:
      continue
    if s in seen:
      dups += 1
      continue
    seen.add(s)
    out.extend(groups[s])
  out = out[:k_max]
  return out + [-1] * (k_max - len(out)), dups


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_csr_matches_brute_force_tie_policy(seed):
  ids, codes, pop = _random_catalogue(seed)
  ix = SidItemIndex.from_arrays(ids, codes, pop)
  keys, groups = _brute_groups(ids, codes, pop)
  assert [tuple(r) for r in ix.unique_codes.tolist()] == keys
  assert np.array_equal(ix.unique_codes, np.unique(codes, axis=0))
  for s, g in enumerate(groups):
    assert ix.items_of(s).tolist() == g
    assert all(ix.sid_of_item[i] == s for i in g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expand_matches_brute_force(seed):
  ids, codes, pop = _random_catalogue(seed)
  ix = SidItemIndex.from_arrays(ids, codes, pop)
  keys, groups = _brute_groups(ids, codes, pop)
  rng = np.random.default_rng(100 + seed)
  sid = rng.integers(-1, len(keys), size=(9, 7))  # -1s and repeats
  sid[0] = -1  # an all-invalid query
  for k_max in (1, 5, 40, 200):
    rows, dups = ix.expand(sid, k_max, return_duplicates=True)
    assert rows.shape == (9, k_max) and rows.dtype == np.int32
    for b in range(9):
      want, want_dups = _brute_expand(keys, groups, sid[b].tolist(), k_max)
      assert rows[b].tolist() == want
      assert dups[b] == want_dups
      got = [x for x in rows[b].tolist() if x >= 0]
      assert len(got) == len(set(got))  # no duplicate items


def test_expand_hand_example_and_errors():
  # SIDs (lexicographic): [0,0] -> d; [0,1] -> b; [1,0] -> c (pop 3), a (1), e (0).
  ix = SidItemIndex.from_arrays(
    ["a", "b", "c", "d", "e"],
    np.array([[1, 0], [0, 1], [1, 0], [0, 0], [1, 0]]),
    np.array([1, 5, 3, 3, 0.0]),
  )
  rows = ix.expand(np.array([[2, 0, 2, -1, 1]]), 6)
  assert rows.tolist() == [[2, 0, 4, 3, 1, -1]]
  assert ix.expand(np.zeros((2, 0), np.int32), 3).tolist() == [[-1] * 3] * 2
  with pytest.raises(ValueError, match="sid_index values"):
    ix.expand(np.array([[3]]), 2)
  with pytest.raises(ValueError, match=r"\[B, W\]"):
    ix.expand(np.array([1, 2]), 2)
  assert ix.sid_index_of_codes(
    np.array([[1, 0], [0, 1], [5, 5], [0, 0], [0, 2]])
  ).tolist() == [2, 1, -1, 0, -1]


def test_sid_index_of_codes_round_trip():
  ids, codes, pop = _random_catalogue(3, n=200)
  ix = SidItemIndex.from_arrays(ids, codes, pop)
  assert np.array_equal(ix.sid_index_of_codes(codes), ix.sid_of_item)
  assert ix.sid_index_of_codes(np.array([[3, 0, 0], [-1, 0, 0]])).tolist() == [-1, -1]


def test_from_artefact_agrees_with_sid_to_items():
  from onesearch_jax.khqe import artefact as art_lib

  ids, codes, pop = _random_catalogue(4)

  class Fake:  # only the fields SidItemIndex reads
    item_ids = tuple(ids)
    item_codes = codes.astype(np.int32)
    item_popularity = pop

  ix = SidItemIndex.from_artefact(Fake)
  multimap = art_lib.SIDArtefact.sid_to_items(Fake)
  assert list(multimap) == [tuple(r) for r in ix.unique_codes.tolist()]
  for s, items in enumerate(multimap.values()):
    assert [ids[i] for i in ix.items_of(s)] == items
