"""The flowchart's decision point, "need deep learning?", as a stated rule.

1. Train the classical baseline (the sklearn path).
2. If its **validation** score reaches ``target_score`` (accuracy for classification,
   R² for regression), stop: classical ML is enough.
3. Otherwise train ``deep_path`` and keep it only if its validation score beats the
   baseline's by at least ``margin``; else keep the baseline (simpler, smaller, faster).

The test split is never used to decide, so the reported test metrics stay honest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from deploykit.data import Split
from deploykit.errors import TrainingError
from deploykit.training.common import CARD, TrainConfig, primary_metric

DEFAULT_TARGET = {"classification": 0.95, "regression": 0.90}
DEFAULT_MARGIN = 0.01
DEFAULT_DEEP_PATH = "keras-tensorflow"


def choose(split: Split, cfg: TrainConfig, out: Path, *, target_score: float | None = None,
           margin: float = DEFAULT_MARGIN, deep_path: str = DEFAULT_DEEP_PATH
           ) -> tuple[Path, dict[str, Any]]:
    """Apply the rule; return the chosen path's work folder and its card (with a decision)."""
    from deploykit.training import DEEP_PATHS, fit_into

    if deep_path not in DEEP_PATHS:
        raise TrainingError(f"--deep-path must be one of {', '.join(DEEP_PATHS)}")
    task = split.dataset.task
    metric = primary_metric(task)
    target = DEFAULT_TARGET[task] if target_score is None else target_score
    rule = (f"classical if its validation {metric} >= {target:g}; otherwise {deep_path} "
            f"if it beats classical by >= {margin:g}, else classical")
    base_dir, base = fit_into("sklearn", split, cfg, out)
    base_score = base["metrics"]["validation"][metric]
    scores = {"sklearn": base_score}
    if base_score >= target:
        chosen_dir, chosen = base_dir, base
        reason = (f"the classical baseline ({base['model']['kind']}) reached validation {metric} "
                  f"{base_score:.3f} >= target {target:g}, so deep learning is not needed")
    else:
        deep_dir, deep = fit_into(deep_path, split, cfg, out)
        deep_score = scores[deep_path] = deep["metrics"]["validation"][metric]
        if deep_score >= base_score + margin:
            chosen_dir, chosen, drop = deep_dir, deep, base_dir
            reason = (f"classical validation {metric} {base_score:.3f} < target {target:g}, and "
                      f"{deep_path} reached {deep_score:.3f}, beating it by >= {margin:g}")
        else:
            chosen_dir, chosen, drop = base_dir, base, deep_dir
            reason = (f"classical validation {metric} {base_score:.3f} < target {target:g}, but "
                      f"{deep_path} reached only {deep_score:.3f} (needs >= "
                      f"{base_score + margin:.3f}), so the simpler classical model is kept")
        shutil.rmtree(drop, ignore_errors=True)
    chosen["decision"] = {"chosen": chosen["path"], "reason": reason, "rule": rule,
                          "metric": metric, "validation_scores": scores}
    import json
    (chosen_dir / CARD).write_text(json.dumps(chosen, indent=2) + "\n")
    return chosen_dir, chosen
