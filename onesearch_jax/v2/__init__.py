"""OneSearch-V2 pieces (SPEC §6.3-6.5), every one switched off by default.

Modules: `distill_losses` (self-distillation KL·τ², R-Drop, FGM, focal
loss), `sdft` (the self-distillation objective and train step on the model),
`tpma` (TPMA-GRPO position-wise advantages, prefix gates and the unclipped
objective), `grpo_rewards` (the composite item reward and the format
reward), `keyword_thoughts` (the keyword generator interface and the
built-in dictionary generator), `keyword_cache` (the JSONL cache reader),
`keyword_source` (the generator a ``MuSeqConfig.keywords`` setting names),
`keyword_sids` (keyword texts -> their KHQE SIDs, for the CoT tasks),
`cot_decode` (direct CoT: greedy keyword span, then the SID beam search).
docs/V2.md says what is wired into training and what is not.
"""
