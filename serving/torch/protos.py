"""Python gRPC stubs for TorchServe, generated from the .proto files shipped inside its jar.

The jar the installed `torchserve` runs is the one source of truth for its gRPC
API, so the stubs are built from it (not from a copy that could drift) into the
git-ignored package `serving/torch/proto_gen/`. A stamp records the jar's
sha256 and the generator versions; generation is skipped while they match.

    python -m serving.torch.protos          # generate if needed, say what happened
    python -m serving.torch.protos --force  # regenerate
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import importlib
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from common.fsutil import sha256_of

PACKAGE = "serving.torch.proto_gen"
OUT_DIR = Path(__file__).with_name("proto_gen")
STAMP = OUT_DIR / "stamp.json"
PROTOS = ("inference.proto", "management.proto")  # open_inference_grpc.proto (KServe v2) is not used here
FORMAT = 1  # bump when the generated layout changes, so old trees are rebuilt

# inference.proto imports google/rpc/status.proto, which neither the jar nor
# grpcio-tools ships. This is googleapis' file without comments: same package,
# options and fields, so its descriptor matches googleapis-common-protos' and
# the two can share a process.
GOOGLE_RPC_STATUS = """\
syntax = "proto3";

package google.rpc;

import "google/protobuf/any.proto";

option cc_enable_arenas = true;
option go_package = "google.golang.org/genproto/googleapis/rpc/status;status";
option java_multiple_files = true;
option java_outer_classname = "StatusProto";
option java_package = "com.google.rpc";
option objc_class_prefix = "RPC";

message Status {
  int32 code = 1;
  string message = 2;
  repeated google.protobuf.Any details = 3;
}
"""


class Stubs(NamedTuple):
    inference_pb2: ModuleType
    inference_pb2_grpc: ModuleType
    management_pb2: ModuleType
    management_pb2_grpc: ModuleType


class ProtoError(RuntimeError):
    """The stubs could not be generated."""


def jar_path() -> Path:
    """The installed TorchServe frontend jar."""
    try:
        import ts
    except ImportError:
        raise ProtoError("torchserve is not installed; run 'make setup'") from None
    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    if not jar.is_file():
        raise ProtoError(f"TorchServe's frontend jar is missing: {jar}")
    return jar


def _wanted_stamp(jar: Path) -> dict:
    from importlib.metadata import version

    # protobuf's runtime refuses gencode from a newer protoc, so a changed grpcio-tools means regenerating.
    return {"format": FORMAT, "jar": str(jar), "jar_sha256": sha256_of(jar), "protos": list(PROTOS),
            "grpcio_tools": version("grpcio-tools"), "protobuf": version("protobuf")}


def read_stamp() -> dict | None:
    try:
        return json.loads(STAMP.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked():
    """One generator at a time: parallel test workers or commands may all call ensure_stubs()."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with open(OUT_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def generate(force: bool = False) -> bool:
    """Generate the stubs unless the stamp says they are current. True when it generated."""
    jar = jar_path()
    wanted = _wanted_stamp(jar)
    with _locked():
        if not force and read_stamp() == wanted and (OUT_DIR / "inference_pb2_grpc.py").is_file():
            return False
        STAMP.unlink(missing_ok=True)  # a failed run below must not leave a stamp vouching for a half tree
        with tempfile.TemporaryDirectory(prefix="ts-protos-") as tmp:
            source = Path(tmp)
            _extract(jar, source)
            _protoc(source)
        _make_package()
        STAMP.write_text(json.dumps(wanted, indent=2) + "\n", encoding="utf-8")
    importlib.invalidate_caches()
    return True


def _extract(jar: Path, into: Path) -> None:
    with zipfile.ZipFile(jar) as archive:
        names = set(archive.namelist())
        for proto in PROTOS:
            member = f"proto/{proto}"
            if member not in names:
                raise ProtoError(f"{jar} has no {member}; is this TorchServe 0.12?")
            (into / proto).write_bytes(archive.read(member))
    status = into / "google" / "rpc" / "status.proto"
    status.parent.mkdir(parents=True)
    status.write_text(GOOGLE_RPC_STATUS, encoding="utf-8")


def _protoc(source: Path) -> None:
    for stale in OUT_DIR.iterdir():  # leave nothing from an older jar behind
        if stale.name not in (".lock", STAMP.name):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{source}", f"-I{well_known}",
               f"--python_out={OUT_DIR}", f"--grpc_python_out={OUT_DIR}", *PROTOS, "google/rpc/status.proto"]
    result = subprocess.run(command, cwd=source, capture_output=True, text=True)
    if result.returncode != 0:
        raise ProtoError(f"grpc_tools.protoc failed ({result.returncode}):\n{result.stderr.strip()}")


def _make_package() -> None:
    """protoc writes top-level imports (`import inference_pb2`); make them relative to the package."""
    for directory in (OUT_DIR, OUT_DIR / "google", OUT_DIR / "google" / "rpc"):
        (directory / "__init__.py").write_text('"""Generated by serving.torch.protos; do not edit."""\n')
    for module in OUT_DIR.glob("*_pb2*.py"):
        text = module.read_text(encoding="utf-8")
        text = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
        text = re.sub(r"^from google\.rpc import ", "from .google.rpc import ", text, flags=re.M)
        module.write_text(text, encoding="utf-8")


@functools.cache
def ensure_stubs() -> Stubs:
    """The generated modules, generating them first if they are missing or stale (checked once per process)."""
    generate()
    return Stubs(*(importlib.import_module(f"{PACKAGE}.{name}") for name in Stubs._fields))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="regenerate even if the stamp is current")
    args = parser.parse_args(argv)
    try:
        generated = generate(force=args.force)
    except ProtoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stamp = read_stamp()
    verb = "generated" if generated else "up to date:"
    print(f"{verb} {OUT_DIR} from {stamp['jar']} (sha256 {stamp['jar_sha256'][:12]}, "
          f"{', '.join(stamp['protos'])}; grpcio-tools {stamp['grpcio_tools']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
