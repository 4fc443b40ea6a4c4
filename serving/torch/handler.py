"""TorchServe handler: TF Serving's REST body in, {"predictions": [...]} out.

Packed into the .mar with model.pt2 (a torch.export program: no pickled
Python classes), model_meta.json and rest_codec.py. TorchServe hands it a
batch of requests; each is validated on its own, so one bad request gets a 400
with a message while the good ones in the same batch are answered.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

try:  # inside the archive the codec sits beside this file
    import rest_codec
except ImportError:  # in the repository
    from serving import rest_codec

logger = logging.getLogger(__name__)


class TFServingJSONHandler:
    """Serves one exported image classifier. TorchServe requires exactly one class here."""

    def __init__(self) -> None:
        self.initialized = False

    def initialize(self, context) -> None:
        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "model_meta.json"), encoding="utf-8") as handle:
            self.meta = json.load(handle)
        self.device = self._pick_device(context)
        program = torch.export.load(os.path.join(model_dir, self.meta["program_file"]))
        self.model = program.module().to(self.device)
        self.input_shape = tuple(self.meta["input_shape"])
        self.max_batch = int(self.meta["max_batch"])
        self.max_bytes = int(self.meta["max_request_bytes"])
        torch.set_num_threads(int(os.environ.get("TS_TORCH_THREADS", torch.get_num_threads())))
        self.initialized = True
        logger.info("loaded %s version %s on %s", self.meta["model_name"], self.meta["version"], self.device)

    @staticmethod
    def _pick_device(context) -> torch.device:
        gpu = context.system_properties.get("gpu_id")
        if torch.cuda.is_available() and gpu is not None:
            return torch.device(f"cuda:{gpu}")
        return torch.device("cpu")

    def decode(self, row: dict) -> np.ndarray:
        body = row.get("body", row.get("data"))
        request = rest_codec.parse_json(body, self.max_bytes)
        return rest_codec.decode_images(request, self.meta["input_name"], self.input_shape, self.max_batch)

    def handle(self, data: list[dict], context) -> list:
        batches, answers = [], [None] * len(data)
        for index, row in enumerate(data):
            try:
                batches.append((index, self.decode(row)))
            except rest_codec.PayloadError as exc:
                context.set_response_status(code=exc.status, phrase=str(exc), idx=index)
                answers[index] = json.dumps({"error": str(exc)})
        if batches:
            images = torch.from_numpy(np.concatenate([images for _, images in batches])).to(self.device)
            with torch.inference_mode():
                probabilities = self.model(images).float().cpu().numpy()
            start = 0
            for index, images in batches:
                rows = probabilities[start:start + len(images)]
                answers[index] = json.dumps(rest_codec.encode_predictions(rows))
                start += len(images)
        return answers
