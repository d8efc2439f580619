"""Core-keyword enhancement (SPEC §2.2): mine a dictionary, match, fuse.

Dictionary. OneSearch keeps one keyword pool per attribute type (18 types),
built from clicked query-item pairs, sorted by PV, high-frequency words only.
Here the candidates are the items' attribute values (the ``attributes``
extension field of items.jsonl, type -> value); a value's PV is the number of
impressions plus clicks, in the train split of recall.jsonl, of the items that
carry it. Values with PV >= ``min_pv`` are kept, sorted by PV (then text). A
text carried under several types keeps the type with the largest PV.

Fallback (data without ``attributes``, e.g. real KuaiSearch): candidates are
the n-grams of item titles (1-3 words for alphabetic text; 2-4 characters
for CJK runs, which have no spaces) that also occur in some query. They must
appear in at least ``ngram_min_titles`` titles and in at most
``ngram_max_title_share`` of all titles (a word in every title says nothing);
English stop words are left out. Their tag is ``"ngram"`` and their PV is
computed as above from the titles that contain them.

Matching (as the official ``keyword_enhance.py``): texts and keywords are
NFKC-normalised and lower-cased; an Aho-Corasick automaton (pyahocorasick)
finds every occurrence; an alphabetic/digit keyword edge must sit on a word
boundary (CJK characters need none); hits are taken longest first and a hit
whose text is a substring of an already-kept keyword is dropped.

Fusion: ``fused = L2norm(0.5·raw + 0.5·mean(matched keyword embeddings))``;
a text with no match keeps its raw embedding unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ahocorasick
import numpy as np

NGRAM_TAG = "ngram"

_STOP_WORDS = frozenset(
  "a an and are as at be by for from in into is it of on or the to with "
  "without your you our my new set pack pcs pc x".split()
)


@dataclasses.dataclass(frozen=True)
class KeywordConfig:
  """How the keyword dictionary is mined."""

  min_pv: int = 5  # keep keywords whose PV (impressions + clicks) is >= this
  max_keywords: int = 20_000  # cap on the dictionary size (highest PV first)
  min_chars: int = 2  # shorter keywords (after normalisation) are ignored
  ngram_max_words: int = 3  # fallback: longest alphabetic n-gram (words)
  ngram_cjk_chars: tuple[int, int] = (2, 4)  # fallback: CJK n-gram lengths
  ngram_min_titles: int = 3  # fallback: n-gram must occur in this many titles
  ngram_max_title_share: float = 0.2  # fallback: ... and in at most this share


@dataclasses.dataclass(frozen=True)
class Keyword:
  """One dictionary entry."""

  text: str  # normalised (NFKC, lower-case)
  tag: str  # attribute type, or NGRAM_TAG
  pv: int  # impressions + clicks of the items carrying it


def normalise(text: str) -> str:
  """NFKC + lower case + single spaces: the form keywords are matched in."""
  return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def is_cjk(ch: str) -> bool:
  """True for Han, kana, Hangul and CJK punctuation/compatibility characters."""
  o = ord(ch)
  return (
    0x2E80 <= o <= 0x9FFF  # radicals, punctuation, kana, Han
    or 0xA960 <= o <= 0xA97F
    or 0xAC00 <= o <= 0xD7FF  # Hangul
    or 0xF900 <= o <= 0xFAFF
    or 0xFF00 <= o <= 0xFFEF  # full-width forms
    or 0x20000 <= o <= 0x3FFFF
  )


def _is_word_char(ch: str) -> bool:
  return ch.isalnum() and not is_cjk(ch)


def item_pv(
  sessions: Iterable[Mapping[str, Any]], split: str | None = "train"
) -> Counter:
  """item id -> impressions + clicks over the sessions of `split` (None: all)."""
  pv: Counter = Counter()
  for s in sessions:
    if split is not None and s.get("split") != split:
      continue
    pv.update(s["impressed_item_ids"])
    pv.update(s["clicked_item_ids"])
  return pv


def _tokens(text: str) -> list[tuple[int, int, bool]]:
  """(start, end, cjk) spans: alphabetic/digit words and single CJK chars."""
  spans, i, n = [], 0, len(text)
  while i < n:
    ch = text[i]
    if is_cjk(ch) and ch.isalnum():
      spans.append((i, i + 1, True))
      i += 1
    elif _is_word_char(ch):
      j = i
      while j < n and _is_word_char(text[j]):
        j += 1
      spans.append((i, j, False))
      i = j
    else:
      i += 1
  return spans


def ngrams(text: str, config: KeywordConfig = KeywordConfig()) -> set[str]:
  """Candidate n-grams of a normalised text (substrings of it).

  Alphabetic runs give 1..ngram_max_words word n-grams (no stop word at either
  end); CJK runs give character n-grams of ngram_cjk_chars lengths. An n-gram
  never mixes the two scripts.
  """
  out: set[str] = set()
  spans = _tokens(text)
  lo, hi = config.ngram_cjk_chars
  for a in range(len(spans)):
    cjk = spans[a][2]
    max_len = hi if cjk else config.ngram_max_words
    for n in range(1, max_len + 1):
      b = a + n - 1
      if b >= len(spans) or spans[b][2] != cjk:
        break
      if cjk and n > 1 and spans[b][0] != spans[b - 1][1]:
        break  # a space or symbol ends the CJK run
      if cjk and n < lo:
        continue
      gram = text[spans[a][0] : spans[b][1]]
      if not cjk:
        words = gram.split()
        if words[0] in _STOP_WORDS or words[-1] in _STOP_WORDS:
          continue
        if not any(ch.isalpha() for ch in gram):
          continue  # bare numbers
      if len(gram) >= config.min_chars:
        out.add(gram)
  return out


def _finish(
  pool: Mapping[tuple[str, str], int], config: KeywordConfig
) -> list[Keyword]:
  best: dict[str, Keyword] = {}
  for (text, tag), pv in pool.items():
    if pv < config.min_pv or len(text) < config.min_chars:
      continue
    old = best.get(text)
    if old is None or (pv, tag) > (old.pv, old.tag):
      best[text] = Keyword(text, tag, pv)
  ranked = sorted(best.values(), key=lambda k: (-k.pv, k.text))
  return ranked[: config.max_keywords]


def mine_keywords(
  items: Sequence[Mapping[str, Any]],
  sessions: Sequence[Mapping[str, Any]],
  config: KeywordConfig = KeywordConfig(),
  *,
  pv: Mapping[str, int] | None = None,
) -> tuple[list[Keyword], str]:
  """Mines the keyword dictionary from the catalogue and the logs.

  Args:
    items: items.jsonl rows (item_id, item_title, optional attributes).
    sessions: recall.jsonl rows (the train split gives the PV; the n-gram
      fallback takes its query n-grams from them).
    config: the KeywordConfig.
    pv: item id -> PV, when counted elsewhere (a streamed build counts it
      over the whole log but mines a sample of ``sessions``); None:
      ``item_pv(sessions)``.

  Returns:
    (keywords sorted by descending PV then text, source) where source is
    "attributes" or "ngrams" (the fallback, used when no item has a
    non-empty ``attributes`` field).
  """
  pv = item_pv(sessions) if pv is None else pv
  pool: dict[tuple[str, str], int] = defaultdict(int)
  has_attributes = any(row.get("attributes") for row in items)
  if has_attributes:
    for row in items:
      for tag, value in sorted((row.get("attributes") or {}).items()):
        text = normalise(str(value))
        if text:
          pool[(text, str(tag))] += pv[row["item_id"]]
    return _finish(pool, config), "attributes"
  query_grams: set[str] = set()
  for q in sorted({s["query"] for s in sessions}):
    query_grams |= ngrams(normalise(q), config)
  titles = Counter()
  gram_pv: dict[str, int] = defaultdict(int)
  for row in items:
    grams = ngrams(normalise(row["item_title"]), config) & query_grams
    titles.update(grams)
    for g in grams:
      gram_pv[g] += pv[row["item_id"]]
  max_titles = config.ngram_max_title_share * max(len(items), 1)
  for g, n in titles.items():
    if config.ngram_min_titles <= n <= max_titles:
      pool[(g, NGRAM_TAG)] = gram_pv[g]
  return _finish(pool, config), "ngrams"


class KeywordMatcher:
  """Longest-first Aho-Corasick matching of a keyword dictionary."""

  def __init__(self, keywords: Sequence[str]):
    """Builds the automaton.

    Args:
      keywords: K keyword texts; `match` returns indices into this list.
        Texts are normalised; duplicates after normalisation keep the first.
    """
    self.keywords = [normalise(k) for k in keywords]
    self._automaton = ahocorasick.Automaton()
    order = sorted(range(len(self.keywords)), key=lambda i: (-len(self.keywords[i]), i))
    for i in order:  # longest first, as the official dictionary loader
      k = self.keywords[i]
      if k and k not in self._automaton:
        # (index, length, whether each edge needs a word boundary)
        self._automaton.add_word(
          k, (i, len(k), _is_word_char(k[0]), _is_word_char(k[-1]))
        )
    self._empty = len(self._automaton) == 0
    # keyword -> the other kept keywords that contain it (a hit inside an
    # already-kept keyword is dropped): found once here, not per text
    self._inside: dict[int, frozenset[int]] = {}
    if not self._empty:
      self._automaton.make_automaton()
      inside = defaultdict(set)
      for _, (j, _, _, _) in self._automaton.items():
        for _, (i, _, _, _) in self._automaton.iter(self.keywords[j]):
          if i != j:
            inside[i].add(j)
      self._inside = {i: frozenset(js) for i, js in inside.items()}

  def match(self, text: str) -> list[int]:
    """Keywords found in `text`, longest first, substrings of kept ones dropped.

    Returns:
      Indices into the keyword list, in kept order (longest first, then by
      first position).
    """
    if self._empty:
      return []
    t = normalise(text)
    last = len(t) - 1
    first: dict[int, int] = {}
    lengths: dict[int, int] = {}
    for end, (i, n, head, tail) in self._automaton.iter(t):
      start = end - n + 1
      if head and start > 0 and _is_word_char(t[start - 1]):
        continue
      if tail and end < last and _is_word_char(t[end + 1]):
        continue
      if i not in first:
        first[i] = start
        lengths[i] = n
    if len(first) < 2:
      return list(first)
    kept: list[int] = []
    none: frozenset[int] = frozenset()
    for i in sorted(first, key=lambda i: (-lengths[i], first[i])):
      if self._inside.get(i, none).isdisjoint(kept):
        kept.append(i)
    return kept

  def match_all(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.match(t) for t in texts]


def match_stats(matches: Sequence[Sequence[int]]) -> dict[str, float]:
  """Share of texts with >= 1 match and mean matches per matched text."""
  n = len(matches)
  hit = [len(m) for m in matches if m]
  return {
    "texts": float(n),
    "match_rate": len(hit) / n if n else 0.0,
    "mean_keywords_per_matched": float(np.mean(hit)) if hit else 0.0,
  }


def keyword_centroids(
  matches: Sequence[Sequence[int]], embeddings: np.ndarray, n_keywords: int
) -> tuple[np.ndarray, np.ndarray]:
  """Keyword embeddings as the mean of the texts that match them.

  Used when the embeddings are precomputed and no encoder can embed the
  keyword text itself.

  Args:
    matches: per text, keyword indices (as returned by KeywordMatcher.match).
    embeddings: [N, D] embeddings of those texts.
    n_keywords: K.

  Returns:
    (centroids [K, D] float32, L2-normalised; valid [K] bool, False for a
    keyword matched by no text, whose row is zero).
  """
  d = embeddings.shape[1]
  sums = np.zeros((n_keywords, d), np.float64)
  counts = np.zeros((n_keywords,), np.int64)
  for row, ks in enumerate(matches):
    for k in ks:
      sums[k] += embeddings[row]
      counts[k] += 1
  valid = counts > 0
  norms = np.linalg.norm(sums, axis=1, keepdims=True)
  out = np.where(valid[:, None], sums / np.maximum(norms, 1e-12), 0.0)
  return out.astype(np.float32), valid


def fuse(
  raw: np.ndarray,
  matches: Sequence[Sequence[int]],
  keyword_embeddings: np.ndarray,
  valid: np.ndarray | None = None,
  weights: np.ndarray | None = None,
) -> np.ndarray:
  """Keyword fusion: L2norm(0.5·raw + 0.5·mean(matched keyword embeddings)).

  Computed in float64 as one text at a time would be, bit for bit: each
  mean sums its keywords in match order from zero and divides by their
  number, each norm is the BLAS dot of its row (``np.linalg.norm``'s); only
  the gathers and the element-wise arithmetic run on all rows at once.

  With ``weights`` the mean is weighted: Σ w_k·e_k / Σ w_k over the row's
  matched keywords (``tag_weights``: e.g. brand and product-type keywords
  above the rest); without, every keyword weighs 1 (the paper's mean, the
  same arithmetic as before the option existed).

  Args:
    raw: [N, D] raw embeddings.
    matches: N lists of keyword indices.
    keyword_embeddings: [K, D].
    valid: optional [K] bool; keywords marked False are ignored.
    weights: optional [K] positive float weights of the keywords.

  Returns:
    [N, D] float32; rows with no (valid) match are `raw` unchanged.
  """
  if len(matches) != raw.shape[0]:
    raise ValueError(f"fuse: {raw.shape[0]} embeddings but {len(matches)} match lists")
  out = np.array(raw, np.float32, copy=True)
  if valid is not None:
    matches = [[k for k in ks if valid[k]] for ks in matches]
  counts = np.fromiter(map(len, matches), np.int64, len(matches))  # [N]
  rows = np.flatnonzero(counts)  # [R] the rows with a match
  if not rows.size:
    return out
  flat = np.fromiter(itertools.chain.from_iterable(matches), np.int64, counts.sum())
  starts = (np.cumsum(counts) - counts)[rows]  # [R] first index into flat
  n = counts[rows]  # [R]
  emb = np.asarray(keyword_embeddings).astype(np.float64)  # [K, D]
  total = np.zeros((rows.size, emb.shape[1]), np.float64)  # [R, D]
  # Unit weights give the plain mean exactly (1.0·e and a sum of ones are exact).
  w = np.ones(emb.shape[0]) if weights is None else np.asarray(weights, np.float64)
  if w.shape != (emb.shape[0],) or not np.all(w > 0):
    raise ValueError(
      f"fuse: weights must be {emb.shape[0]} positive values, got shape {w.shape}"
    )
  wsum = np.zeros((rows.size,), np.float64)  # [R]
  for j in range(int(n.max())):  # the j-th keyword of every row that has one
    live = np.flatnonzero(n > j)
    k = flat[starts[live] + j]
    total[live] += w[k][:, None] * emb[k]
    wsum[live] += w[k]
  v = 0.5 * raw[rows].astype(np.float64) + 0.5 * (total / wsum[:, None])  # [R, D]
  norms = np.sqrt(np.fromiter((x.dot(x) for x in v), np.float64, rows.size))
  out[rows] = v / np.maximum(norms, 1e-12)[:, None]
  return out


def tag_weights(
  entries: Sequence[Keyword], weights: Sequence[tuple[str, float]]
) -> np.ndarray | None:
  """[K] fusion weights of dictionary entries from (tag, weight) pairs (tags
  not listed weigh 1); None for no pairs (``fuse``'s unweighted mean).

  Raises:
    ValueError: a weight that is not > 0, or a tag listed twice.
  """
  if not weights:
    return None
  table = {}
  for tag, w in weights:
    if tag in table:
      raise ValueError(f"keyword tag weights: {tag!r} is listed twice")
    if not float(w) > 0:
      raise ValueError(f"keyword tag weights: {tag!r} has weight {w}, need > 0")
    table[str(tag)] = float(w)
  return np.array([table.get(k.tag, 1.0) for k in entries], np.float64)


def save_dictionary(
  path: str | os.PathLike, entries: Sequence[Keyword], embeddings: np.ndarray
) -> None:
  """Writes the dictionary in the official format ``keyword\\ttag\\tpv\\temb``.

  Embedding values are separated by ``\\x02`` (as keyword_enhance.py reads).

  Args:
    path: output file (UTF-8).
    entries: K keywords.
    embeddings: [K, D] their embeddings.
  """
  if len(entries) != embeddings.shape[0]:
    raise ValueError(
      f"save_dictionary: {len(entries)} keywords, {embeddings.shape[0]} rows"
    )
  with open(path, "w", encoding="utf-8") as f:
    for k, e in zip(entries, np.asarray(embeddings, np.float32), strict=True):
      for field in (k.text, k.tag):
        if any(c in field for c in "\t\n\r\x02"):
          raise ValueError(f"save_dictionary: {field!r} holds a tab, newline or \\x02")
      vec = "\x02".join(repr(float(v)) for v in e)
      f.write(f"{k.text}\t{k.tag}\t{k.pv}\t{vec}\n")


def load_dictionary(path: str | os.PathLike) -> tuple[list[Keyword], np.ndarray]:
  """Reads a file written by `save_dictionary`.

  Returns:
    (keywords, embeddings [K, D] float32).

  Raises:
    ValueError: naming the file and line of a malformed row.
  """
  path = os.fspath(path)
  entries, vecs = [], []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, start=1):
      line = line.rstrip("\n")
      if not line:
        continue
      parts = line.split("\t")
      if len(parts) != 4:
        raise ValueError(
          f"{path}:{n}: expected 4 tab-separated fields, got {len(parts)}"
        )
      try:
        pv = int(parts[2])
        vec = [float(v) for v in parts[3].split("\x02")]
      except ValueError as e:
        raise ValueError(f"{path}:{n}: field 'pv' or 'emb' is not numeric ({e})") from e
      if vecs and len(vec) != len(vecs[0]):
        raise ValueError(
          f"{path}:{n}: field 'emb' has {len(vec)} values, expected {len(vecs[0])}"
        )
      entries.append(Keyword(parts[0], parts[1], pv))
      vecs.append(vec)
  emb = np.asarray(vecs, np.float32).reshape(len(vecs), -1 if vecs else 0)
  return entries, emb
