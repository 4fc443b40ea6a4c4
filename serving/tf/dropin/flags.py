"""tensorflow_model_server's command line, for the flags the drop-in implements.

Flags are written as TF Serving writes them (--port=8500 or --port 8500;
booleans as --enable_batching, --enable_batching=true or =false). A flag the
drop-in does not implement is refused by name, never silently ignored.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from serving.tf.dropin.errors import StartupError


def _bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass
class ServerFlags:
    port: int = 8500
    rest_api_port: int = 0
    bind_address: str = "127.0.0.1"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 0
    monitoring_config_file: str = ""
    grpc_socket_path: str = ""
    grpc_channel_arguments: str = ""
    ssl_config_file: str = ""
    prefer_tflite_model: bool = False
    use_tflite_model: bool = False
    enable_signature_method_name_check: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    enable_profiler: bool = True
    saved_model_tags: str = "serve"
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    max_body_bytes: int = 64 << 20
    version: bool = False


class _OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line and exit code 2, as every error at start-up."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> _OneLineParser:
    parser = _OneLineParser(
        prog="tf-serving-dropin", add_help=True,
        description="Local drop-in for tensorflow_model_server (not the official binary).")
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (0 disables TCP gRPC)")
    add("--rest_api_port", type=int, default=0, help="HTTP/REST port (0 disables REST, as in TF Serving)")
    add("--bind_address", default="127.0.0.1",
        help="drop-in extension: address to listen on (TF Serving binds all interfaces; the drop-in loopback)")
    add("--model_name", default="default")
    add("--model_base_path", default="", help="directory holding numeric version subdirectories")
    add("--model_config_file", default="", help="text-format ModelServerConfig (several models)")
    add("--model_config_file_poll_wait_seconds", type=int, default=0, help="re-read the config file (0: never)")
    add("--file_system_poll_wait_seconds", type=int, default=1, help="poll for new versions (0: load once)")
    add("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    add("--batching_parameters_file", default="")
    add("--rest_api_timeout_in_ms", type=int, default=30000)
    add("--rest_api_num_threads", type=int, default=0,
        help="threads that run REST requests (0: 4 x the CPUs this process may use, as TF Serving)")
    add("--monitoring_config_file", default="")
    add("--grpc_socket_path", default="", help="also serve gRPC on this Unix socket")
    add("--ssl_config_file", default="",
        help="text-format SSLConfig (server_key, server_cert, custom_ca as PEM text; client_verify): gRPC over TLS")
    add("--grpc_channel_arguments", default="", help="comma-separated key=value gRPC server arguments")
    add("--prefer_tflite_model", type=_bool, nargs="?", const=True, default=False,
        help="serve model.tflite from the version directory through the TFLite interpreter")
    add("--use_tflite_model", type=_bool, nargs="?", const=True, default=False,
        help="the older name of --prefer_tflite_model (TF Serving's own integration tests use it)")
    add("--enable_signature_method_name_check", type=_bool, nargs="?", const=True, default=False,
        help="refuse Classify/Regress on signatures whose method_name is not classify/regress (TF2 models "
             "have only predict, so TF Serving leaves this off)")
    add("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?", const=True, default=False,
        help="let a version label name a version that is not serving yet (without it, as in TF Serving, a config "
             "with labels fails at start-up: assign them with a later config reload)")
    add("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True,
        help="replay each version's assets.extra/tf_serving_warmup_requests before it serves")
    add("--num_request_iterations_for_warmup", type=int, default=0,
        help="times each warm-up record runs (used only if > 0; otherwise once)")
    add("--enable_profiler", type=_bool, nargs="?", const=True, default=True,
        help="answer TensorFlow profiler trace requests on the gRPC port")
    add("--saved_model_tags", default="serve", help="comma-separated MetaGraphDef tags to load")
    add("--tensorflow_session_parallelism", type=int, default=0,
        help="threads for a TensorFlow session (0: TensorFlow decides); sets intra- and inter-op pools")
    add("--tensorflow_intra_op_parallelism", type=int, default=0, help="threads inside one op (0: TensorFlow decides)")
    add("--tensorflow_inter_op_parallelism", type=int, default=0, help="ops run at once (0: TensorFlow decides)")
    add("--max_body_bytes", type=int, default=64 << 20, help="drop-in extension: largest REST body accepted")
    add("--version", action="store_true", help="print the version and exit")
    return parser


def parse_flags(argv: list[str] | None) -> ServerFlags:
    """Parse argv; StartupError names any flag the drop-in does not implement."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        names = sorted({item.split("=", 1)[0] for item in unknown if item.startswith("-")}) or unknown
        raise StartupError(f"flag(s) not implemented by the TF Serving drop-in: {', '.join(names)} "
                         "(run with --help for the flags it implements)")
    flags = ServerFlags(**vars(args))
    if not flags.version:
        _check(flags)
    return flags


def _check(flags: ServerFlags) -> None:
    if bool(flags.model_config_file) == bool(flags.model_base_path):
        raise StartupError("give exactly one of --model_base_path (with --model_name) or --model_config_file")
    if flags.model_base_path and not Path(flags.model_base_path).is_dir():
        raise StartupError(f"--model_base_path {flags.model_base_path} is not a directory")
    if flags.batching_parameters_file and not flags.enable_batching:
        raise StartupError("--batching_parameters_file needs --enable_batching")
    if flags.port == 0 and flags.rest_api_port == 0 and not flags.grpc_socket_path:
        raise StartupError("nothing to serve on: set --port, --rest_api_port or --grpc_socket_path")
    for name in ("port", "rest_api_port"):
        if not 0 <= getattr(flags, name) <= 65535:
            raise StartupError(f"--{name} must be between 0 and 65535")
    if flags.port and flags.port == flags.rest_api_port:
        raise StartupError("--port and --rest_api_port must differ")
    for name in ("rest_api_num_threads", "tensorflow_session_parallelism", "tensorflow_intra_op_parallelism",
                 "tensorflow_inter_op_parallelism"):
        if getattr(flags, name) < 0:
            raise StartupError(f"--{name} must be 0 or more")
    if not [tag for tag in flags.saved_model_tags.split(",") if tag.strip()]:
        raise StartupError("--saved_model_tags needs at least one tag")
