"""Training: optimizers, sharded train state, pure jitted steps, checkpoints."""
