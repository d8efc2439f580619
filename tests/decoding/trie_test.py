"""Trie build invariants against a brute-force Python dict trie."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from onesearch_jax import decoding
from onesearch_jax.decoding import trie as trie_lib


def _codes(seed, n, sizes):
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, v, size=n) for v in sizes], axis=1)


def _dict_trie(codes):
  root = {}
  for row in codes.tolist():
    node = root
    for c in row:
      node = node.setdefault(c, {})
  return root


def _prefixes(root, depth):
  """Sorted list of the depth-`depth` prefixes (tuples) of the dict trie."""
  out = [((), root)]
  for _ in range(depth):
    out = [(p + (c,), ch) for p, node in out for c, ch in sorted(node.items())]
  return out


@pytest.mark.parametrize("dense_levels", [0, 1, 2, 3])
def test_trie_matches_dict_trie(dense_levels):
  sizes = (3, 4, 5)
  codes = _codes(0, 40, sizes)
  codes = np.concatenate([codes, codes[:5]])  # shared SIDs
  t = trie_lib.build_trie(codes, sizes, (10, 13, 17), dense_levels=dense_levels)
  root = _dict_trie(codes)
  for lvl in range(3):
    parents = _prefixes(root, lvl)
    children = _prefixes(root, lvl + 1)
    child_id = {p: i for i, (p, _) in enumerate(children)}
    assert t.num_nodes[lvl] == len(parents)
    assert t.num_nodes[lvl + 1] == len(children)
    fan = 0
    for n, (p, node) in enumerate(parents):
      lo, hi = t.indptr[lvl][n], t.indptr[lvl][n + 1]
      want = sorted(node)
      fan = max(fan, len(want))
      assert list(t.child_code[lvl][lo:hi]) == want
      assert [child_id[p + (c,)] for c in want] == list(range(lo, hi))
      assert list(t.parent[lvl][lo:hi]) == [n] * len(want)
      if lvl < dense_levels:
        row = t.dense_child[lvl][n]
        for c in range(sizes[lvl]):
          expect = child_id.get(p + (c,), -1)
          assert row[c] == expect
    assert t.max_fanout[lvl] == fan
  unique = np.unique(codes, axis=0)
  assert t.num_sids == len(unique) and t.num_items == len(codes)
  # Leaf id == sid_index == row in np.unique (lexicographic) order.
  np.testing.assert_array_equal(trie_lib.trie_unique_codes(t), unique)
  np.testing.assert_array_equal(unique[t.item_sid], codes)
  assert len(t.dense_child) == dense_levels


def test_bytes_per_item_counts_every_array():
  sizes = (64, 64, 64, 256, 256)
  codes = _codes(1, 20_000, sizes)
  t = trie_lib.build_trie(codes, sizes, (0, 64, 128, 192, 448), dense_levels=2)
  n = t.num_nodes
  expect = sum(4 * (n[lvl] + 1) + 2 * n[lvl + 1] for lvl in range(5))
  expect += 4 * (n[0] * 64 + n[1] * 64)
  assert t.index_bytes() == expect
  assert t.bytes_per_item == pytest.approx(expect / 20_000)
  assert t.bytes_per_item <= 32
  assert t.item_map_bytes_per_item == pytest.approx(
    (4 * 20_000 + 4 * sum(n[1:])) / 20_000
  )


def test_lookup_sid_index_trie_and_unique_codes_agree():
  sizes = (4, 3, 6)
  codes = _codes(2, 30, sizes)
  t = trie_lib.build_trie(codes, sizes, (0, 4, 7), dense_levels=1)
  unique = trie_lib.unique_sids(codes)
  grid = np.stack(
    np.meshgrid(*[np.arange(-1, v + 1) for v in sizes], indexing="ij"), -1
  ).reshape(-1, 3)
  want = np.array(
    [next((i for i, r in enumerate(unique) if (r == q).all()), -1) for q in grid]
  )
  got_np = trie_lib.lookup_sid_index(unique, grid)
  got_jax = np.asarray(jax.jit(lambda q: trie_lib.lookup_sid_index(t, q))(grid))
  np.testing.assert_array_equal(got_np, want)
  np.testing.assert_array_equal(got_jax, want)
  assert (want >= 0).sum() == len(unique)
  # Batched shape [..., S] is kept.
  assert trie_lib.lookup_sid_index(unique, grid.reshape(2, -1, 3)).shape == (
    2,
    grid.shape[0] // 2,
  )


def test_capacity_keeps_shapes_when_items_are_added():
  sizes = (4, 4, 4)
  codes = _codes(3, 20, sizes)
  more = np.concatenate([codes, _codes(4, 20, sizes)])
  kw = dict(dense_levels=1, capacity=64, item_capacity=64)
  a = trie_lib.build_trie(codes, sizes, (0, 4, 8), **kw)
  b = trie_lib.build_trie(more, sizes, (0, 4, 8), **kw)
  sa, sb = jax.tree.structure(a), jax.tree.structure(b)
  assert sa == sb
  assert [x.shape for x in jax.tree.leaves(a)] == [x.shape for x in jax.tree.leaves(b)]
  assert a.max_fanout == (4, 4, 4) and a.num_sids < b.num_sids
  np.testing.assert_array_equal(trie_lib.trie_unique_codes(b), np.unique(more, axis=0))


def test_bad_inputs_raise_clear_errors():
  sizes = (4, 4)
  with pytest.raises(ValueError, match=r"codes\[1, 1\] = 4 outside level 1"):
    trie_lib.build_trie(np.array([[0, 1], [2, 4]]), sizes, (0, 4))
  with pytest.raises(ValueError, match="expected \\[N, 2\\]"):
    trie_lib.build_trie(np.zeros((3, 3), int), sizes, (0, 4))
  with pytest.raises(ValueError, match="exceed capacity"):
    trie_lib.build_trie(_codes(0, 10, sizes), sizes, (0, 4), capacity=2)
  with pytest.raises(ValueError, match="empty catalogue"):
    trie_lib.build_trie(np.zeros((0, 2), int), sizes, (0, 4))


def test_choose_dense_levels_keeps_dense_tables_within_budget():
  sizes = (1024, 1024, 1024)
  # 4 * 1024 B = 0.04 B/item; depth 1 adds 4 MiB = 42 B/item at 100k.
  assert trie_lib.choose_dense_levels(sizes, num_items=100_000) == 1
  assert trie_lib.choose_dense_levels(sizes, num_items=1_000_000) == 2
  assert trie_lib.choose_dense_levels(sizes, num_items=10) == 0
  codes = _codes(5, 3000, (8, 8, 8))
  d = trie_lib.choose_dense_levels((8, 8, 8), num_items=3000, max_bytes_per_item=0.2)
  t = trie_lib.build_trie(codes, (8, 8, 8), (0, 8, 16), dense_levels=d)
  dense_bytes = sum(x.nbytes for x in t.dense_child)
  assert d == 2 and dense_bytes / 3000 <= 0.2


def test_catalogue_trie_uses_the_model_token_layout():
  codes = np.array([[0, 1, 2], [0, 1, 3], [2, 0, 0]])
  ranges = ((10, 13), (13, 15), (20, 24))
  trie = decoding.catalogue_trie(codes, ranges)
  want = decoding.build_trie(codes, (3, 2, 4), (10, 13, 20))
  assert trie.level_sizes == want.level_sizes == (3, 2, 4)
  assert trie.token_offsets == (10, 13, 20)
  assert trie.num_sids == 3 and trie.num_items == 3
  inverse = np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)
  np.testing.assert_array_equal(decoding.lookup_sid_index(trie, codes), inverse)
