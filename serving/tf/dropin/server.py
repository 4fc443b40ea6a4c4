"""Wire the drop-in together: flags -> models -> manager/batching -> gRPC and REST front ends."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from serving.tf.dropin import ONEDNN_VARIABLE, SERVER_IDENTITY
from serving.tf.dropin.config import (
    ModelConfig,
    parse_batching_parameters,
    parse_model_config_file,
    parse_monitoring_config,
    parse_ssl_config,
)
from serving.tf.dropin.core import DropInCore
from serving.tf.dropin.errors import ServingError, StartupError
from serving.tf.dropin.flags import ServerFlags, parse_flags
from serving.tf.dropin.servable import LoadOptions

DROPIN_VERSION = "0.1.0"
log = logging.getLogger("tf-serving-dropin")


def _models(flags: ServerFlags) -> list[ModelConfig]:
    if flags.model_config_file:
        return parse_model_config_file(Path(flags.model_config_file))
    return [ModelConfig(flags.model_name, Path(flags.model_base_path).resolve())]


def load_options(flags: ServerFlags) -> LoadOptions:
    """How versions load: tags, TFLite preference, TensorFlow's thread pools and warm-up, as TF Serving's flags set
    them."""
    intra = flags.tensorflow_intra_op_parallelism or flags.tensorflow_session_parallelism
    inter = flags.tensorflow_inter_op_parallelism or flags.tensorflow_session_parallelism
    return LoadOptions(prefer_tflite=flags.prefer_tflite_model or flags.use_tflite_model,
                       tags=tuple(tag.strip() for tag in flags.saved_model_tags.split(",") if tag.strip()),
                       intra_op_threads=intra, inter_op_threads=inter, warmup=flags.enable_model_warmup,
                       warmup_iterations=max(1, flags.num_request_iterations_for_warmup))


def build_core(flags: ServerFlags) -> DropInCore:
    """The protocol-free server, models loaded once before the front ends open."""
    batching = None
    if flags.enable_batching:
        batching = parse_batching_parameters(Path(flags.batching_parameters_file)
                                             if flags.batching_parameters_file else None)
        log.info("tf-serving-dropin: batching on: %s", batching)
    core = DropInCore(_models(flags), load_options(flags), batching, flags.enable_signature_method_name_check,
                      flags.allow_version_labels_for_unavailable_models)
    try:
        core.check_labels(core.manager.models())
    except ServingError as exc:  # TF Serving checks labels before it loads anything, so at start-up every one fails
        raise StartupError(f"Failed to start server. Error: {exc.code}: {exc}") from None
    reload = (lambda: _models(flags)) if flags.model_config_file else None
    core.start_polling(flags.file_system_poll_wait_seconds, reload, flags.model_config_file_poll_wait_seconds)
    return core


def run(flags: ServerFlags) -> int:
    from serving.tf.dropin.grpc_api import parse_channel_arguments

    try:
        channel_args = parse_channel_arguments(flags.grpc_channel_arguments)
    except ValueError as exc:
        raise StartupError(f"--grpc_channel_arguments: {exc}") from None
    monitoring = parse_monitoring_config(Path(flags.monitoring_config_file)
                                         if flags.monitoring_config_file else None)
    ssl = parse_ssl_config(Path(flags.ssl_config_file) if flags.ssl_config_file else None)
    log.info("%s %s starting", SERVER_IDENTITY, DROPIN_VERSION)
    log.info("tf-serving-dropin: %s=%s (0: TensorFlow's own kernels, not oneDNN's custom ones)",
             ONEDNN_VARIABLE, os.environ.get(ONEDNN_VARIABLE))
    core = build_core(flags)
    # TensorFlow and the loaded models leave ~400,000 objects on the heap (393,000 with `tiny`); a full collection
    # walked them in 234 ms here while requests waited. Freezing what exists now keeps the collector to what
    # requests allocate (tf-rest's p99 went from 250-270 ms to 32-39 ms; README, make bench-dropin).
    gc.freeze()
    try:
        grpc_server, rest_server = _front_ends(flags, core, channel_args, monitoring, ssl)
    except OSError as exc:  # a port or socket that is taken: say which, exit 2
        core.stop()
        raise StartupError(str(exc)) from None

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    log.info("tf-serving-dropin: shutting down")
    core.stop()
    if rest_server:
        rest_server.shutdown()
    if grpc_server:
        grpc_server.stop(grace=5)
    return 0


def _front_ends(flags: ServerFlags, core: DropInCore, channel_args, monitoring, ssl=None):
    """Open gRPC (TCP and/or Unix socket) and REST as the flags ask."""
    from serving.tf.dropin.grpc_api import serve_grpc
    from serving.tf.dropin.rest_api import RestApi
    from serving.tf.dropin.rest_server import serve_rest

    grpc_server = rest_server = None
    if flags.port or flags.grpc_socket_path:
        grpc_server = serve_grpc(core, flags.bind_address, flags.port, socket_path=flags.grpc_socket_path or None,
                                 channel_args=channel_args, profiler=flags.enable_profiler, ssl=ssl)
        if flags.port:
            log.info("Running gRPC ModelServer at %s:%d ... (tf-serving-dropin)", flags.bind_address, grpc_server.port)
        if flags.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ... (tf-serving-dropin)", flags.grpc_socket_path)
    if flags.rest_api_port:
        api = RestApi(core, timeout_ms=flags.rest_api_timeout_in_ms, monitoring=monitoring, version=DROPIN_VERSION)
        rest_server = serve_rest(api, flags.bind_address, flags.rest_api_port, max_body_bytes=flags.max_body_bytes,
                                 num_threads=flags.rest_api_num_threads)
        log.info("Exporting HTTP/REST API at:%s:%d ... (tf-serving-dropin)", flags.bind_address, rest_server.port)
    return grpc_server, rest_server


def main(argv: list[str] | None = None) -> int:
    flags = parse_flags(argv)
    if flags.version:
        print(f"TensorFlow ModelServer: {DROPIN_VERSION} (tf-serving-dropin, not the official binary)")
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s tf-serving-dropin %(levelname)s %(message)s")
    return run(flags)
