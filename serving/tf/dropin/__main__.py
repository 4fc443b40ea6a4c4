"""python -m serving.tf.dropin --port=8500 --rest_api_port=8501 --model_name=tiny --model_base_path=..."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common.errors import run_cli  # noqa: E402
from serving.tf.dropin.server import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
