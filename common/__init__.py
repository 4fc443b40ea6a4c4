"""Code shared by every stage: paths, the manifest, CLI errors, environment records, targets.

TensorFlow's C++ start-up chatter is quieted here, the one place: every entry point imports
`common` before anything loads TensorFlow, and the servers and helpers it starts inherit the
setting. (The TF Serving drop-in, a server of its own, sets it in its own __main__.)
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
