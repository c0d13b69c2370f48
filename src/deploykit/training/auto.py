"""The flowchart's decision point, "need deep learning?", as a stated rule.

1. Train the classical baseline (the sklearn flow).
2. If its **validation** score reaches ``target_score`` (accuracy for classification,
   R² for regression), stop: classical ML is enough.
3. Otherwise train ``deep_flow`` and keep it only if its validation score beats the
   baseline's by at least ``margin``; else keep the baseline (simpler, smaller, faster).

The test split is never used to decide, so the reported test metrics stay honest.
"""

from __future__ import annotations

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
    target = DEFAULT_TARGET[task] if target_score is None else target_score
    rule = (f"classical if its validation {metric} >= {target:g}; otherwise {deep_flow} "
            f"if it beats classical by >= {margin:g}, else classical")
    base_dir, base = fit_into("sklearn", split, cfg, out)
    base_score = base["metrics"]["validation"][metric]
    scores = {"sklearn": base_score}
    if base_score >= target:
        chosen_dir, chosen = base_dir, base
        reason = (f"the classical baseline ({base['model']['kind']}) reached validation {metric} "
                  f"{base_score:.3f} >= target {target:g}, so deep learning is not needed")
    else:
        deep_dir, deep = fit_into(deep_flow, split, cfg, out)
        deep_score = scores[deep_flow] = deep["metrics"]["validation"][metric]
        if deep_score >= base_score + margin:
            chosen_dir, chosen, drop = deep_dir, deep, base_dir
            reason = (f"classical validation {metric} {base_score:.3f} < target {target:g}, and "
                      f"{deep_flow} reached {deep_score:.3f}, beating it by >= {margin:g}")
        else:
            chosen_dir, chosen, drop = base_dir, base, deep_dir
            reason = (f"classical validation {metric} {base_score:.3f} < target {target:g}, but "
                      f"{deep_flow} reached only {deep_score:.3f} (needs >= "
                      f"{base_score + margin:.3f}), so the simpler classical model is kept")
        shutil.rmtree(drop, ignore_errors=True)
    chosen["decision"] = {"chosen": chosen["flow"], "reason": reason, "rule": rule,
                          "metric": metric, "validation_scores": scores}
    import json
    (chosen_dir / CARD).write_text(json.dumps(chosen, indent=2) + "\n")
    return chosen_dir, chosen
