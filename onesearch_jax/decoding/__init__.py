"""SID decoding: catalogue trie, jitted beam search, exhaustive scoring."""

from onesearch_jax.decoding.beam_search import (
  BeamResult,
  BeamSearcher,
  beam_search,
  make_beam_search,
)
from onesearch_jax.decoding.exhaustive import score_all_sids
from onesearch_jax.decoding.trie import (
  TrieIndex,
  build_trie,
  catalogue_trie,
  choose_dense_levels,
  lookup_sid_index,
  trie_unique_codes,
  unique_sids,
)

__all__ = [
  "BeamResult",
  "BeamSearcher",
  "TrieIndex",
  "beam_search",
  "build_trie",
  "catalogue_trie",
  "choose_dense_levels",
  "lookup_sid_index",
  "make_beam_search",
  "score_all_sids",
  "trie_unique_codes",
  "unique_sids",
]
