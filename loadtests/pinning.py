"""Which CPUs the load generator runs on, given where `make deploy` pinned the servers.

The servers are pinned when they start (SERVER_CPUSET, common/cpus.py): pinning
a running TorchServe afterwards leaves its worker's thread pool sized for
every core, and on fewer cores its threads spin against each other (an earlier
version that pinned afterwards made TorchServe far slower). So a run only
reads the servers' CPU set from their deploy records, checks both servers
share it, and gives the generator the CPUs they do not use.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.cpus import available_cpus


@dataclass
class CpuPlan:
    applied: bool
    generator_cpus: list[int] | None
    server_cpus: list[int] | None
    note: str = ""

    def record(self) -> dict:
        return {"applied": self.applied, "generator_cpus": self.generator_cpus, "server_cpus": self.server_cpus,
                "note": self.note}


def plan_cpus(server_sets: list[list[int] | None], enabled: bool = True,
              available: list[int] | None = None) -> CpuPlan:
    """The generator gets every CPU no server is pinned to; not applied when that leaves none, or when asked."""
    cpus = sorted(available if available is not None else available_cpus())
    distinct = {tuple(s) if s else None for s in server_sets}
    servers = sorted({cpu for s in server_sets if s for cpu in s}) or None
    if not enabled:
        return CpuPlan(False, None, servers, "generator pinning turned off (--no-pin)")
    if servers is None:
        return CpuPlan(False, None, None, "servers not pinned (SERVER_CPUSET=all or containers): all share the CPUs")
    note = "servers pinned at start (SERVER_CPUSET); generator on the other CPUs (sched_setaffinity)"
    if len(distinct) > 1:
        note += f"; WARNING: the servers do not share one CPU set: {sorted(map(str, distinct))}"
    generator = [cpu for cpu in cpus if cpu not in servers]
    if not generator:
        return CpuPlan(False, None, servers, "servers use every CPU: the generator shares them")
    return CpuPlan(True, generator, servers, note)
