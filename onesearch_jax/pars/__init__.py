"""PARS: preference-aware reward system (SPEC §4.2-4.3).

Modules: `logs` (the world's interaction log as arrays), `rewards` (six
interaction levels, calibrated CTR/CVR, item rewards, pair weights),
`rm_features` + `reward_model` (three-tower CTR/CVR/CTCVR reward model and
R_score), `listwise` (softmax-DPO with reward-gap weights and a frozen
reference), `phases` (RM-guided and real-interaction preference examples),
`rerank` (serving-time RM re-rank), `run` (the gin-free stage entry).
"""
