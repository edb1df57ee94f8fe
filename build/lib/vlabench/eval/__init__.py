"""Evaluation: rollout workers, metrics (Wilson intervals, paired tests) and results files."""
