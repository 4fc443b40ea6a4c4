"""Provenance lines: what served, measured and ran every number, as recorded in the results files."""

from __future__ import annotations

from typing import Any

from report import fmt
from report.load import Loaded


def model_line(model: dict[str, Any]) -> str:
    macs = model.get("multiply_accumulates")
    extra = f", {macs / 1e6:,.1f} M multiply-accumulates" if macs else ""
    return f"model: {model['name']} (profile {model['profile']}, batch size {model['batch_size']}{extra})"


def environment_lines(environment: dict[str, Any]) -> list[str]:
    generator = environment["generator"]
    return [f"hardware: {fmt.hardware(environment['host'])}",
            f"pinning: {fmt.pinning(environment['pinning'])}",
            f"load generator: {generator['tool']} {generator['version']}",
            f"packages: {fmt.packages(environment['packages'])}"]


def server_groups(servers: dict[str, dict[str, Any]]) -> list[str]:
    """One line per distinct server (binary, version, knobs, CPUs), naming the targets it served."""
    groups: dict[str, list[str]] = {}
    for target, server in servers.items():
        line = f"{fmt.server_identity(server)}; knobs {fmt.knobs(server.get('knobs'))}"
        if server.get("cpus"):
            line += f"; CPUs {fmt.cpus(server['cpus'])}"
        groups.setdefault(line, []).append(target)
    return [f"{'/'.join(targets)}: {line}" for line, targets in groups.items()]


def run_provenance(loaded: Loaded, servers: dict[str, dict[str, Any]]) -> list[str]:
    """Everything a reader needs to know before comparing two numbers from this run or sweep."""
    data = loaded.data
    return [f"source: {loaded.source.describe()}", model_line(data["model"]),
            *environment_lines(data["environment"]), *(f"server {line}" for line in server_groups(servers))]


def figure_footer(loaded: Loaded, servers: dict[str, dict[str, Any]]) -> list[str]:
    """The short provenance printed inside a figure, so a copied image still says where it came from."""
    data = loaded.data
    model, environment = data["model"], data["environment"]
    return [f"{loaded.source.describe()}",
            f"model {model['name']} (profile {model['profile']}, batch {model['batch_size']}); "
            f"{fmt.hardware({k: v for k, v in environment['host'].items() if k != 'os'})}; "
            f"pinning {fmt.pinning(environment['pinning'])}",
            *server_groups(servers)]
