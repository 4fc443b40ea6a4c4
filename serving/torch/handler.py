"""TorchServe handler: TF Serving's REST body in, {"predictions": [...]} out.

Packed into the .mar with model.pt2 (a torch.export program: no pickled
Python classes), model_meta.json, rest_codec.py and numeric_json.py. TorchServe hands it a
batch of requests; each is validated on its own, so one bad request gets a 400
with a message while the good ones in the same batch are answered.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from http import HTTPStatus

import numpy as np
import torch
from ts.metrics.dimension import Dimension

try:  # inside the archive the codec sits beside this file
    import rest_codec
except ImportError:  # in the repository
    from serving import rest_codec

logger = logging.getLogger(__name__)

# Declared in serving/torch/metrics.yaml (TorchServe 0.12 drops model metrics its metrics config does not name).
BATCH_METRIC = "ProcessedBatches"


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
        set_torch_threads()
        freeze_loaded_objects()
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
                # The message goes in the body; the reason phrase stays the fixed ASCII one. TorchServe's worker
                # frames the phrase with its length in characters but its bytes in UTF-8 (create_predict_response in
                # ts/protocol/otf_message_handler.py), so a message echoing a non-ASCII signature_name broke the
                # frame: TorchServe answered 500 "Worker died." and restarted the worker, or, misreading a length,
                # answered no one until responseTimeout (120 s) and then restarted it.
                context.set_response_status(code=exc.status, phrase=HTTPStatus(exc.status).phrase, idx=index)
                answers[index] = json.dumps({"error": str(exc)})
        if batches:
            images = torch.from_numpy(np.concatenate([images for _, images in batches])).to(self.device)
            with torch.inference_mode():
                probabilities = self.model(images).float().cpu().numpy()
            report_batch_size(context, len(images))
            start = 0
            for index, images in batches:
                rows = probabilities[start:start + len(images)]
                answers[index] = json.dumps(rest_codec.encode_predictions(rows))
                start += len(images)
        return answers


def report_batch_size(context, images: int) -> None:
    """Count one batch under its size in images on TorchServe's metrics API, as TF Serving's processed_batch_size
    does: TorchServe itself reports no batch sizes. Requests the handler refused (400) are not in the batch."""
    if getattr(context, "metrics", None) is not None:
        # a fresh list each time: TorchServe appends ModelName and Level to the list it is given
        context.metrics.add_counter(BATCH_METRIC, 1, dimensions=[Dimension("BatchSize", str(images))])


def freeze_loaded_objects() -> None:
    """Move everything loaded so far out of the garbage collector's sight.

    The worker holds about 330,000 objects once torch and the program are loaded; every full
    collection walked them all: 214 ms on average, up to 576 ms, every 0.6 s under load on one
    CPU, which was TorchServe's p99 (torch-rest at 130 req/s: p99 361 ms, 88 ms frozen). They
    live as long as the worker, so freezing them loses nothing.
    """
    gc.collect()
    gc.freeze()


def set_torch_threads() -> None:
    """Size torch's intra-op pool as deploy says (TS_TORCH_THREADS: the servers' CPU count) and log what runs.

    Unset, torch keeps its own choice (OpenMP: the CPUs of the affinity mask). The inter-op pool is only logged:
    it is sized to the host, but the exported program never uses it (the worker runs no inter-op threads).
    """
    wanted = os.environ.get("TS_TORCH_THREADS")
    if wanted:
        torch.set_num_threads(int(wanted))
    logger.info("torch threads: intra-op %d, inter-op %d", torch.get_num_threads(), torch.get_num_interop_threads())
