"""Training in both frameworks: time per epoch and final accuracy, from the checkpoints `make train-both` writes."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean
from typing import Any

from report import fmt, plots
from report.doc import Bullets, Figure, Paragraph, Row, Section, Table
from report.load import Loaded

TRAINER_PACKAGES = {"torch": ("torch",), "tf": ("tensorflow", "keras")}
RUN_TRAIN_BOTH = "run `make train-both` (the same profile with the torch and the tf trainer)"


@dataclass(frozen=True)
class TrainingRun:
    """One checkpoint's training figures."""

    loaded: Loaded

    @property
    def meta(self) -> dict[str, Any]:
        return self.loaded.data

    @property
    def epoch_seconds(self) -> list[float]:
        return [row["seconds"] for row in self.meta["history"] if "seconds" in row]

    @property
    def mean_epoch_s(self) -> float | None:
        return mean(self.epoch_seconds) if self.epoch_seconds else None

    @property
    def total_s(self) -> float | None:
        return self.meta.get("train_seconds", sum(self.epoch_seconds) if self.epoch_seconds else None)

    @property
    def final_val_accuracy(self) -> float | None:
        history = self.meta["history"]
        return history[-1].get("val_accuracy") if history else None

    @property
    def versions(self) -> str:
        tools = self.meta.get("tools", {})
        names = TRAINER_PACKAGES.get(self.meta["trainer"], ())
        return ", ".join(f"{name} {tools[name]}" for name in names if name in tools) or "not recorded"


def by_profile(checkpoints: list[Loaded]) -> dict[str, list[TrainingRun]]:
    groups: dict[str, list[TrainingRun]] = {}
    for loaded in sorted(checkpoints, key=lambda c: (c.data["profile"], c.data["trainer"], c.source.path)):
        groups.setdefault(loaded.data["profile"], []).append(TrainingRun(loaded))
    return groups


def _table(groups: dict[str, list[TrainingRun]]) -> Table:
    rows = [Row([profile, run.meta["model_name"], run.meta["trainer"], fmt.integer(len(run.meta["history"])),
                 fmt.number(run.mean_epoch_s, 3), fmt.number(run.epoch_seconds[0] if run.epoch_seconds else None, 3),
                 fmt.number(run.total_s, 2), fmt.percent(run.final_val_accuracy, 2),
                 fmt.percent(run.meta["test_accuracy"], 2), run.versions, fmt.hardware(run.meta.get("host") or {})])
            for profile, runs in groups.items() for run in runs]
    return Table("training", "Training per checkpoint. The first epoch includes start-up (graph tracing, "
                 "data pipeline warm-up), so it is shown apart as well as in the mean.",
                 ["profile", "model", "trainer", "epochs", "mean s/epoch", "first epoch s", "total s",
                  "final val accuracy", "test accuracy", "framework", "hardware"], rows)


def compare_trainers(profile: str, runs: list[TrainingRun]) -> str | None:
    """One sentence comparing the first torch and tf checkpoints of a profile; None unless both exist."""
    first = {trainer: next((r for r in runs if r.meta["trainer"] == trainer), None) for trainer in ("torch", "tf")}
    torch_run, tf_run = first["torch"], first["tf"]
    if torch_run is None or tf_run is None or not torch_run.mean_epoch_s or not tf_run.mean_epoch_s:
        return None
    faster, slower = sorted((torch_run, tf_run), key=lambda r: (r.mean_epoch_s, r.meta["trainer"]))
    delta = (tf_run.meta["test_accuracy"] - torch_run.meta["test_accuracy"]) * 100
    return (f"profile {profile}: the {faster.meta['trainer']} trainer is faster, {faster.mean_epoch_s:.3f} s/epoch "
            f"against {slower.mean_epoch_s:.3f} s/epoch ({slower.mean_epoch_s / faster.mean_epoch_s:.2f}x); "
            f"test accuracy torch {fmt.percent(torch_run.meta['test_accuracy'], 2)}, tf "
            f"{fmt.percent(tf_run.meta['test_accuracy'], 2)} (tf {delta:+.2f} points).")


def trainer_comparisons(groups: dict[str, list[TrainingRun]]) -> list[str]:
    """compare_trainers for every profile that has both trainers' checkpoints."""
    return [line for line in (compare_trainers(profile, runs) for profile, runs in groups.items()) if line]


def training_section(checkpoints: list[Loaded], groups: dict[str, list[TrainingRun]],
                     comparisons: list[str]) -> Section:
    """The training table and figure; `groups` and `comparisons` are by_profile and trainer_comparisons of them."""
    section = Section("training", "Training in each framework")
    if not checkpoints:
        return section.add(Paragraph(f"not measured yet: {RUN_TRAIN_BOTH}", "note"))
    section.sources = [c.source.describe() for c in checkpoints]
    section.provenance = [f"{c.source.path}: seed {c.data.get('seed', '?')}, batch size "
                          f"{c.data.get('batch_size', '?')}, {fmt.integer(c.data.get('train_images'))} training "
                          f"images, data {c.data.get('dataset', '?')}" for c in checkpoints]
    missing = [f"profile {profile}: only the {', '.join(sorted({r.meta['trainer'] for r in runs}))} trainer's "
               f"checkpoint exists; {RUN_TRAIN_BOTH}"
               for profile, runs in groups.items() if not {"torch", "tf"} <= {r.meta["trainer"] for r in runs}]
    if missing:
        section.add(*(Paragraph(line, "note") for line in missing))
    if comparisons:
        section.add(Bullets(comparisons))
    section.add(_table(groups))
    runs = [run for group in groups.values() for run in group if run.mean_epoch_s is not None]
    if runs:
        labels = [f"{r.meta['trainer']} ({r.meta['model_name']})" for r in runs]
        footer = [*(c.source.describe() for c in checkpoints), fmt.hardware(runs[0].meta.get("host") or {})]
        section.add(Figure("training-time", "Training time per epoch", plots.bars(
            labels, [r.mean_epoch_s for r in runs], "mean seconds per epoch", "Training time per epoch", footer),
            footer))
    return section
