"""Figures from the newest sweep that the reliability runs scale their load by (saturation, SLO maximum)."""

from __future__ import annotations

import json
from pathlib import Path


def newest_sweep_figure(results_dir: Path, target: str, figure: str) -> tuple[float, str] | None:
    """(the median of `figure` for `target`, the sweep's run id) from the newest sweep that has it, else None.

    `figure` is a spread in sweep.json's targets object: "saturation" or "slo_max". Newest by the time the sweep
    was created (a run id of the user's choosing, --run-id, says nothing about its age).
    """
    found = []
    for path in results_dir.glob("*/sweep.json"):
        try:
            sweep = json.loads(path.read_text(encoding="utf-8"))
            median = sweep["targets"][target][figure]["median"] if sweep.get("kind") == "sweep" else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if median:
            found.append((str(sweep.get("created", "")), float(median), path.parent.name))
    if not found:
        return None
    _, median, run_id = max(found)
    return median, run_id
