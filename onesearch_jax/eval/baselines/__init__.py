"""Baselines on the same data and splits: BM25, dense exact top-K, MCA cascade."""
