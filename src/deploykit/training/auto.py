"""The flowchart's decision point, "need deep learning?", as a stated rule.

1. Train the classical baseline (the sklearn flow).
2. If its **validation** score reaches ``target_score`` (accuracy for classification,
   R² for regression), stop: classical ML is enough.
3. Otherwise train ``deep_flow`` and keep it only if its validation score beats the
   baseline's by at least ``margin``; else keep the baseline (simpler, smaller, faster).

The test split is never used to decide, so the reported test metrics stay honest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from deploykit.data import Split
from deploykit.errors import TrainingError
from deploykit.flows import DEEP_FLOWS
from deploykit.training.common import CARD, TrainConfig, primary_metric

DEFAULT_TARGET = {"classification": 0.95, "regression": 0.90}
DEFAULT_MARGIN = 0.01
DEFAULT_DEEP_FLOW = "keras-tensorflow"


def decision(task: str, scores: dict[str, float], *, target_score: float | None = None,
             margin: float = DEFAULT_MARGIN, deep_flow: str = DEFAULT_DEEP_FLOW,
             baseline: str = "the classical baseline") -> dict[str, Any] | None:
    """The rule applied to validation ``scores`` (by flow; ``sklearn`` is required).

    Returns:
        ``{"chosen", "reason", "rule", "metric", "validation_scores"}``, or None when the
        baseline missed the target and ``scores`` has no ``deep_flow`` score yet.
    """
    metric = primary_metric(task)
    target = DEFAULT_TARGET[task] if target_score is None else target_score
    rule = (f"classical if its validation {metric} >= {target:g}; otherwise {deep_flow} "
            f"if it beats classical by >= {margin:g}, else classical")
    base = scores["sklearn"]
    used = {"sklearn": base}
    if base >= target:
        chosen = "sklearn"
        reason = (f"{baseline} reached validation {metric} {base:.3f} >= target {target:g}, "
                  f"so deep learning is not needed")
    elif deep_flow not in scores:
        return None
    else:
        deep = used[deep_flow] = scores[deep_flow]
        chosen = deep_flow if deep >= base + margin else "sklearn"
        reason = (f"classical validation {metric} {base:.3f} < target {target:g}, and "
                  f"{deep_flow} reached {deep:.3f}, beating it by >= {margin:g}"
                  if chosen == deep_flow else
                  f"classical validation {metric} {base:.3f} < target {target:g}, but "
                  f"{deep_flow} reached only {deep:.3f} (needs >= {base + margin:.3f}), so "
                  f"the simpler classical model is kept")
    return {"chosen": chosen, "reason": reason, "rule": rule, "metric": metric,
            "validation_scores": used}


def choose(split: Split, cfg: TrainConfig, out: Path, *, target_score: float | None = None,
           margin: float = DEFAULT_MARGIN, deep_flow: str = DEFAULT_DEEP_FLOW
           ) -> tuple[Path, dict[str, Any]]:
    """Apply the rule; return the chosen flow's work folder and its card (with a decision).

    Raises:
        TrainingError: ``deep_flow`` is not a deep flow.
    """
    from deploykit.training.fitting import fit_into

    if deep_flow not in DEEP_FLOWS:
        raise TrainingError(f"--deep-flow must be one of {', '.join(DEEP_FLOWS)}")
    task = split.dataset.task
    metric = primary_metric(task)
    rule = {"target_score": target_score, "margin": margin, "deep_flow": deep_flow}
    folders = {"sklearn": fit_into("sklearn", split, cfg, out)}
    base = folders["sklearn"][1]
    scores = {"sklearn": base["metrics"]["validation"][metric]}
    baseline = f"the classical baseline ({base['model']['kind']})"
    decided = decision(task, scores, baseline=baseline, **rule)
    if decided is None:
        folders[deep_flow] = fit_into(deep_flow, split, cfg, out)
        scores[deep_flow] = folders[deep_flow][1]["metrics"]["validation"][metric]
        decided = decision(task, scores, baseline=baseline, **rule)
    chosen_dir, chosen = folders.pop(decided["chosen"])
    for drop, _ in folders.values():
        shutil.rmtree(drop, ignore_errors=True)
    chosen["decision"] = decided
    (chosen_dir / CARD).write_text(json.dumps(chosen, indent=2) + "\n")
    return chosen_dir, chosen
