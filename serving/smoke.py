"""Smoke checks after a deploy: every transport answers and agrees with the reference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.reference import load_reference
from common.targets import target_named
from serving.config import DeployConfig
from serving.record import read_record
from serving.torch.server import ServerError, read_keys

SMOKE_IMAGES = 16


def token_for(cfg: DeployConfig, target: str, api: str = "inference") -> str | None:
    """TorchServe's token for `api` (inference | management) from the key file deploy recorded (None: auth off)."""
    if target_named(target).side != "torch":
        return None
    record = read_record(cfg.run_dir, "torch")
    key_file = record.key_file if record else str(cfg.run_dir / "torchserve" / "key_file.json")
    if not key_file:
        return None
    try:
        return read_keys(Path(key_file))[api]
    except FileNotFoundError:
        return None


def smoke(cfg: DeployConfig, targets: tuple[str, ...]) -> None:
    """Predict test images on each target; raise ServerError if an argmax differs from the reference."""
    from serving.clients import ClientError, make_client

    reference = load_reference(cfg.paths, cfg.model)  # export's answers: nothing is rebuilt here
    images = reference.images[:SMOKE_IMAGES]
    expected = reference.expected_classes[:SMOKE_IMAGES]
    for target in targets:
        try:
            with make_client(target, host="127.0.0.1", port=cfg.port_of(target), model=cfg.model,
                             token=token_for(cfg, target)) as client:
                predicted = np.asarray(client.predict(images)).argmax(1)
        except ClientError as exc:
            raise ServerError(f"smoke {target}: {exc}") from None
        agree = int((predicted == expected).sum())
        if agree != len(images):
            raise ServerError(f"smoke {target}: argmax agrees with the reference on {agree}/{len(images)} images")
        print(f"smoke {target:<10} ok: {agree}/{len(images)} test images match the reference argmax", flush=True)
