"""python -m serving.tf.dropin --port=8500 --rest_api_port=8501 --model_name=tiny --model_base_path=..."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from serving.tf.dropin.errors import StartupError  # noqa: E402
from serving.tf.dropin.server import main  # noqa: E402


def cli() -> None:
    """The console script `tf-serving-dropin`: named so that it is never mistaken for tensorflow_model_server."""
    try:
        code = main(None)
    except StartupError as exc:  # bad flags or config files: one line, exit 2, nothing started
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    cli()
