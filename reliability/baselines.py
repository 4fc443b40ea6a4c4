"""Figures from the newest sweep that the reliability runs scale their load by (saturation, SLO maximum)."""

from __future__ import annotations

import json
from pathlib import Path


def newest_sweep_figure(results_dir: Path, target: str, figure: str) -> tuple[float, str] | None:
    """(the median of `figure` for `target`, the sweep's run id) from the newest sweep that has it, else None.

    `figure` is a spread in sweep.json's targets object: "saturation" or "slo_max".
    """
    for sweep in sorted(results_dir.glob("*-sweep/sweep.json"), reverse=True):
        try:
            found = json.loads(sweep.read_text(encoding="utf-8"))["targets"][target][figure]["median"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if found:
            return float(found), sweep.parent.name
    return None
