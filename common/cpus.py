"""CPU sets: which cores the servers get and which the load generator gets.

The servers are pinned when they start (a thread pool sized at start-up for
more cores than it may use spins against itself), and both get the same set
so the comparison is fair. The generator gets the rest.

Pinning needs Linux's sched_setaffinity; elsewhere (macOS, the drop-in's
laptop use) nothing is pinned and the first request for it says so once.
"""

from __future__ import annotations

import os
import sys

from common.errors import UsageError

PINNING_AVAILABLE = hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")
_said_unpinned = False


def available_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the OS cannot tell)."""
    if PINNING_AVAILABLE:
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _say_not_pinned(asked: str) -> None:
    global _said_unpinned
    if not _said_unpinned:
        print(f"cpus: SERVER_CPUSET={asked}: this OS ({sys.platform}) has no sched_setaffinity; "
              "servers and load generator are not pinned", file=sys.stderr, flush=True)
        _said_unpinned = True


def default_server_cpus(available: list[int] | None = None) -> list[int] | None:
    """All but a quarter of the CPUs (at least one left for the generator); None with a single CPU."""
    cpus = sorted(available if available is not None else available_cpus())
    if len(cpus) < 2:
        return None
    return cpus[max(1, len(cpus) // 4):]


def parse_server_cpus(text: str, available: list[int] | None = None) -> list[int] | None:
    """SERVER_CPUSET: 'auto' (default split), 'all' (no pinning) or a list like '1,2' or '2-5'."""
    cpus = sorted(available if available is not None else available_cpus())
    text = text.strip().lower()
    if not PINNING_AVAILABLE and text not in ("all", "none", ""):
        _say_not_pinned(text)
        return None
    if text == "auto":
        return default_server_cpus(cpus)
    if text in ("all", "none", ""):
        return None
    chosen = _cpu_list(text)
    missing = sorted(chosen - set(cpus))
    if missing:
        raise UsageError(f"SERVER_CPUSET names CPU(s) {missing} this process may not use (it may use {cpus})")
    return sorted(chosen)


def _cpu_list(text: str) -> set[int]:
    """'1,2' or '2-5' as a set of CPU ids; a range that runs backwards is refused, not read as no CPUs."""
    chosen: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise UsageError(f"SERVER_CPUSET must be auto, all or a CPU list like 1,2 or 2-5; got {text!r}") from None
        if high < low:
            raise UsageError(f"SERVER_CPUSET range {part!r} runs backwards (it names no CPU); write {high}-{low}")
        chosen.update(range(low, high + 1))
    return chosen


def pin_self(cpus: list[int] | None) -> None:
    """For subprocess preexec_fn: run the child on these CPUs only (None, or no pinning on this OS: leave it)."""
    if cpus and PINNING_AVAILABLE:
        os.sched_setaffinity(0, cpus)
