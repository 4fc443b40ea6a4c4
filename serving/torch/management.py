"""TorchServe's management REST API as a version rollout uses it: register, set default, unregister.

    api = Management(port=record.ports["management"], token=read_keys(Path(record.key_file))["management"])
    api.roll_out("tiny", "tiny-v2.mar")  # register v2 from the model store, make it the default, unregister v1

Every call carries the management token. An archive is named by its file name in the model store: the config's
allowed_urls (serving/torch/server.py) refuses every URL outside the store, so a remote archive cannot be registered.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

QUIET_S = 1.0  # how long a version's queue must stay empty before it is unregistered (drain)


class ManagementError(RuntimeError):
    """TorchServe refused a management call: its HTTP status and message ('HTTP 404 ModelNotFoundException: ...')."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status} {message}")
        self.status = status


@dataclass(frozen=True)
class Management:
    port: int
    token: str | None  # TorchServe's management key; None when token authorization is off
    host: str = "127.0.0.1"
    timeout_s: float = 180.0  # a synchronous registration waits for the new version's workers to load the model

    def register(self, model: str, archive: str, *, workers: int = 1, batch_size: int = 1,
                 max_batch_delay_ms: int = 5) -> str:
        """Register `archive` (a .mar in the model store) as a version of `model`; returns once its workers run."""
        return self._call("POST", "/models", url=archive, model_name=model, initial_workers=workers,
                          batch_size=batch_size, max_batch_delay=max_batch_delay_ms, synchronous="true")["status"]

    def set_default(self, model: str, version: str) -> str:
        return self._call("PUT", f"/models/{_quoted(model)}/{_quoted(version)}/set-default")["status"]

    def unregister(self, model: str, version: str) -> str:
        return self._call("DELETE", f"/models/{_quoted(model)}/{_quoted(version)}")["status"]

    def models(self) -> list[str]:
        return [entry["modelName"] for entry in self._call("GET", "/models", limit=1000)["models"]]

    def versions(self, model: str) -> dict[str, bool]:
        """{version: whether it is the default} of a registered model."""
        default = self._call("GET", f"/models/{_quoted(model)}")[0]["modelVersion"]
        return {entry["modelVersion"]: entry["modelVersion"] == default
                for entry in self._call("GET", f"/models/{_quoted(model)}/all")}

    def pending(self, model: str, version: str) -> int:
        """Requests waiting in the job queue of one version of `model` (TorchServe's jobQueueStatus)."""
        described = self._call("GET", f"/models/{_quoted(model)}/{_quoted(version)}")[0]
        return int(described.get("jobQueueStatus", {}).get("pendingRequests", 0))

    def drain(self, model: str, version: str, timeout_s: float = 60.0) -> float:
        """Wait until no request waits for `version` (no longer the default): the seconds it took.

        Unregistering a version stops its worker, and TorchServe puts the worker's in-flight requests back at
        the head of that version's queue; when the queue is full that fails ("IllegalStateException: Deque
        full", HTTP 500) and the unregistration is left half done. An empty queue leaves them room.
        """
        started = time.monotonic()
        empty_since = None
        # the queue counts waiting requests only: the batch a worker took last is answered within its inference
        # time after the queue empties, so the queue must stay empty for QUIET_S (far longer than these models')
        while empty_since is None or time.monotonic() - empty_since < QUIET_S:
            if self.pending(model, version) > 0:
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"version {version} of {model} still had queued requests after "
                                   f"{timeout_s:.0f} s; it is left registered")
            time.sleep(0.1)
        return round(time.monotonic() - started, 2)

    def workers(self, model: str) -> list[dict]:
        """The default version's workers as the management API describes them (id, pid, status, ...)."""
        return self._call("GET", f"/models/{_quoted(model)}")[0].get("workers", [])

    def roll_out(self, model: str, archive: str, **knobs: int) -> str:
        """Register `archive` as a new version of `model`, make it the default, unregister the others: the new version.

        `knobs` are register()'s (workers, batch_size, max_batch_delay_ms). The old versions serve until the new
        one is the default, so requests that name no version are answered throughout; each old version is
        unregistered once the requests queued for it are answered (drain).
        """
        before = set(self.versions(model))
        self.register(model, archive, **knobs)
        (version,) = set(self.versions(model)) - before
        self.set_default(model, version)
        for old in before:
            self.drain(model, old)
            self.unregister(model, old)
        return version

    def _call(self, method: str, path: str, **query: Any) -> Any:
        url = f"http://{self.host}:{self.port}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(url, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise ManagementError(error.code, _reason(error.read())) from None


def _quoted(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _reason(body: bytes) -> str:
    """TorchServe's error body {"code", "type", "message"} as 'type: message' (the raw text if it is not that)."""
    try:
        error = json.loads(body)
        return f"{error['type']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return " ".join(body.decode("utf-8", "replace").split())
