"""KHQE: the keyword-enhanced hierarchical quantisation encoder (SPEC §2).

Quantisation half (this team's part): ``kmeans`` (jitted, chunked, shardable
k-means; its fused Lloyd core is ``lloyd``), ``rq`` (3-level RQ-Kmeans with
the parent-conditional level 3), ``opq`` (OPQ on the level-3 residual),
``quantizer`` (RQ-OPQ and SID strings), ``sid_metrics`` (CUR/ICR), ``report``
and ``artefact`` (the SID artefact).
"""
