"""The model layer: the architecture (spec), its builds in both frameworks, weight transfer, checkpoints, parity."""

import common  # noqa: F401  (quiets TensorFlow before keras/tensorflow load: common/__init__.py)
