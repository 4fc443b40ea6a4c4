"""The export stage: SavedModel, TorchServe .mar and TFLite from one checkpoint, gated on parity."""

import common  # noqa: F401  (quiets TensorFlow before keras/tensorflow load: common/__init__.py)
