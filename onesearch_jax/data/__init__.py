"""Data: vocabulary, Mu-Seq features, seqio tasks and input pipeline (SPEC §3, §4.1)."""
