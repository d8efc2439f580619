"""Item-level evaluation: SID -> item expansion, eval sets, metrics, baselines."""
