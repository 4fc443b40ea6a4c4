"""The shared training stage: one architecture, one training run, weights for both frameworks."""
