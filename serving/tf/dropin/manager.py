"""The manager: which versions of which models are loaded, and handing them to requests.

A poll loads every aspired version that is not loaded yet and unloads the
ones no longer aspired, but only once their replacement is available: a
version that fails to load leaves the serving one in place. Requests hold a
reference to the servable they started with, so a version being unloaded
finishes the requests already in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving.tf.dropin.config import ModelConfig
from serving.tf.dropin.errors import NotFound, ServingError
from serving.tf.dropin.servable import DEFAULT_LOAD, LoadOptions, Servable, load_servable
from serving.tf.dropin.source import aspired_versions

log = logging.getLogger("tf-serving-dropin")


@dataclass
class VersionStatus:
    """TF Serving's ModelVersionStatus: state START|LOADING|AVAILABLE|UNLOADING|END, and an error."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


class ModelManager:
    def __init__(self, models: list[ModelConfig], load_options: LoadOptions = DEFAULT_LOAD,
                 warm_up: Callable[[Servable], None] | None = None) -> None:
        self.load_options = load_options
        self.warm_up = warm_up  # run on a loaded version before it serves (load_options.warmup); raising fails it
        self._lock = threading.RLock()
        self._models: dict[str, ModelConfig] = {}
        self._loaded: dict[str, dict[int, Servable]] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self.set_models(models)

    def set_models(self, models: list[ModelConfig]) -> None:
        """Replace the model list (--model_config_file reload); removed models are unloaded."""
        with self._lock:
            self._models = {m.name: m for m in models}
            for name in list(self._loaded):
                if name not in self._models:
                    for version in list(self._loaded[name]):
                        self._unload(name, version)
                    del self._loaded[name]
            for name in self._models:
                self._loaded.setdefault(name, {})
                self._status.setdefault(name, {})

    def poll(self) -> None:
        """One pass of the source: load new aspired versions, then retire old ones."""
        for model in list(self._models.values()):
            aspired = aspired_versions(model)
            for version, path in aspired.items():
                if version not in self._loaded.get(model.name, {}) and not self._failed(model.name, version):
                    self._load(model, version, path)
            with self._lock:
                loaded = self._loaded.get(model.name, {})
                if any(v in loaded for v in aspired):  # never leave a model with nothing to serve
                    for version in [v for v in loaded if v not in aspired]:
                        self._unload(model.name, version)

    def _failed(self, name: str, version: int) -> bool:
        status = self._status.get(name, {}).get(version)
        return status is not None and status.error_code != "OK"

    def _load(self, model: ModelConfig, version: int, path: Path) -> None:
        self._status[model.name][version] = VersionStatus(version, "LOADING")
        log.info("tf-serving-dropin: loading %s version %d from %s", model.name, version, path)
        try:
            servable = load_servable(model.name, version, path, self.load_options)
            if self.warm_up and self.load_options.warmup:
                self.warm_up(servable)
        except Exception as exc:  # any loader or warm-up failure is reported, never fatal
            log.error("tf-serving-dropin: %s version %d failed to load: %s", model.name, version, exc)
            code = exc.code if isinstance(exc, ServingError) else "UNKNOWN"  # e.g. a warm-up record's own code
            self._status[model.name][version] = VersionStatus(version, "END", code, f"load failed: {exc}")
            return
        with self._lock:
            self._loaded[model.name][version] = servable
            self._status[model.name][version] = VersionStatus(version, "AVAILABLE")
        log.info("tf-serving-dropin: serving %s version %d (%s)", model.name, version, servable.platform)

    def _unload(self, name: str, version: int) -> None:
        self._loaded[name].pop(version, None)
        self._status[name][version] = VersionStatus(version, "END")
        log.info("tf-serving-dropin: unloaded %s version %d", name, version)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request should use: a given version, a labelled one, or the latest."""
        with self._lock:
            if name not in self._models:
                raise NotFound(f"Servable not found for request: Latest({name})")
            loaded = self._loaded[name]
            if label is not None:
                if label not in self._models[name].labels:
                    raise NotFound(f"Unrecognized servable version label: {label}")
                version = self._models[name].labels[label]
            if version is None:
                if not loaded:
                    raise NotFound(f"Servable not found for request: Latest({name})")
                return loaded[max(loaded)]
            if version not in loaded:
                raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            return loaded[version]

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            if name not in self._models:
                raise NotFound(f"Could not find any versions of model {name}")
            statuses = self._status[name]
            if version is not None:
                if version not in statuses:
                    raise NotFound(f"Could not find version {version} of model {name}")
                return [statuses[version]]
            return [statuses[v] for v in sorted(statuses, reverse=True)]

    def models(self) -> list[ModelConfig]:
        with self._lock:
            return list(self._models.values())

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def is_available(self, name: str, version: int) -> bool:
        with self._lock:
            return version in self._loaded.get(name, {})

    def label_version(self, name: str, label: str) -> int | None:
        """The version a label names now, if any."""
        with self._lock:
            model = self._models.get(name)
            return model.labels.get(label) if model else None

    def unavailable(self, names: list[str]) -> list[str]:
        """TF Serving's words for each of these models that has no version serving, and why."""
        missing = []
        with self._lock:
            for name in names:
                if self._loaded.get(name):
                    continue
                failed = [s for s in self._status.get(name, {}).values() if s.error_code != "OK"]
                why = (f" due to error: {failed[-1].error_code}: {failed[-1].error_message}" if failed else
                       f" (no versions found under base path {self._models[name].base_path})")
                missing.append(f"{{name: {name} version: latest}}{why}")
        return missing

    def loaded_servables(self) -> set[Servable]:
        with self._lock:
            return {s for versions in self._loaded.values() for s in versions.values()}
