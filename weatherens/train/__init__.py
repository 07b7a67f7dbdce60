"""Training: the CRPS losses, the jitted step and the loop with checkpoints."""
