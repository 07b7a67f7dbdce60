"""Ensemble inference: member rollouts sharded across devices, perturbations, baselines, WB2 output."""
