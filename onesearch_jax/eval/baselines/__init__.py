"""Baselines on the same data and splits: BM25, dense exact top-K, MCA cascade,
and the two train-click rules (``rules.py``: sidq_pop, query_memory)."""

# Every baseline name EvalConfig.baselines / evaluate.run_baselines accept, in
# the order the eval table lists them.
NAMES = ("bm25", "dense", "mca", "sidq_pop", "query_memory")
