"""Parity: does an artifact predict what the original model predicts?

The probe set (inputs plus the original model's outputs, and the true labels when known)
is run through an artifact at batch sizes 1 and an odd size (its first
:data:`SMALL_BATCH_ROWS` rows) and the full set — a baked-in batch size is a known silent
failure — and compared output by output. Every failure is collected before the verdict; a
:class:`ParityResult` is truthy when it passes.

Profiles (calibrated on the digits what-if matrix, see the closing notes):

========  =================================================================================
fp32      every element ``|a - r| <= 1e-5 + 1e-4·|r|``; integer outputs (labels) identical
fp16      every element ``|a - r| <= 1e-2 + 1e-2·|r|``; label agreement >= 99 %
int8      label agreement >= 99 % and accuracy drop <= 0.01 (classification);
          R² drop <= 0.02 and R²(artifact vs original) >= 0.98 (regression)
========  =================================================================================

Under int8, a probe row whose two most likely classes the original model separates by less
than two steps of an int8 output over [0, 1] (:data:`INT8_TIE_MARGIN`) is a tie at the
artifact's resolution: either label is right, so agreement is counted over the other rows
(the *decisive* ones) and the ties are reported.

A probe set must be able to detect a fault. When the original model's outputs are the same
for every probe input, or the probe set has fewer rows than the profile needs to resolve its
agreement threshold, agreement proves nothing: the result is ``vacuous`` (not passed), with
the reason and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Profile:
    name: str
    atol: float | None  # element-wise rule; None: not checked element-wise
    rtol: float
    min_label_agreement: float | None
    max_metric_drop: float | None


PROFILES = {
    "fp32": Profile("fp32", 1e-5, 1e-4, 1.0, None),
    "fp16": Profile("fp16", 1e-2, 1e-2, 0.99, None),
    "int8": Profile("int8", None, 0.0, 0.99, 0.01),
}
REGRESSION_INT8_MAX_R2_DROP = 0.02
INT8_REGRESSION_MIN_R2 = 0.98
MIN_PROBE_ROWS = 16  # fewer rows than this cannot show a batch-size or data-dependent fault
# Rows run at batch 1 and at the odd batch: enough to show a baked-in batch, a padded last
# chunk or rows that interact, while the full set covers every row. All 360 of digits' rows
# in calls of 1 and of 7 were half the time parity took (a Node round trip per call for TF.js).
SMALL_BATCH_ROWS = 32
INT8_TIE_MARGIN = 2 / 255


@dataclass(frozen=True)
class Probe:
    """Inputs, the original model's outputs on them, and the true targets when known;
    ``shorter``: the same rows cut to a shorter length along the inputs' open axes, with the
    original's outputs on them (for models that take any length); ``scores``: the output of
    class scores, as the signature names it."""

    inputs: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    y: np.ndarray | None = None
    task: str = "classification"
    shorter: Probe | None = None
    scores: str | None = None

    @property
    def n(self) -> int:
        return len(next(iter(self.inputs.values())))

    def rows(self, sl: slice) -> dict[str, np.ndarray]:
        return {k: v[sl] for k, v in self.inputs.items()}

    def head(self, n: int) -> Probe:
        """The first ``n`` rows: inputs, reference outputs and true targets."""
        if n >= self.n:
            return self
        return Probe(self.rows(slice(0, n)), {k: v[:n] for k, v in self.reference.items()},
                     None if self.y is None else self.y[:n], self.task, None, self.scores)


@dataclass(frozen=True)
class OutputStats:
    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    within_tolerance: float | None  # fraction of elements within the rule (None: no rule)


@dataclass(frozen=True)
class ParityResult:
    target: str
    profile: str
    passed: bool
    outputs: list[OutputStats] = field(default_factory=list)
    label_agreement: float | None = None
    top_k: dict[str, float] | None = None
    metric: dict[str, float] | None = None  # artifact and original task metric, and the drop
    batches: dict[str, str] = field(default_factory=dict)  # batch size -> "ok" or the error
    failures: list[str] = field(default_factory=list)
    vacuous: str | None = None  # why agreement on this probe set proves nothing
    ties: int | None = None  # int8: rows left out of agreement as ties at int8 resolution

    def __bool__(self) -> bool:
        return self.passed

    @property
    def status(self) -> str:
        """``pass``, ``vacuous`` (agreed, but the probe set cannot detect a fault) or ``fail``."""
        if self.passed:
            return "pass"
        return "vacuous" if self.vacuous and not self.failures else "fail"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParityResult:
        return cls(d["target"], d["profile"], bool(d["passed"]),
                   [OutputStats(**o) for o in d.get("outputs") or []], d.get("label_agreement"),
                   d.get("top_k"), d.get("metric"), dict(d.get("batches") or {}),
                   list(d.get("failures") or []), d.get("vacuous"), d.get("ties"))

    @property
    def max_abs(self) -> float | None:
        """The largest element-wise error over every output (None when nothing ran; NaN when
        an output held NaN, which a manifest stores as null)."""
        values = [o.max_abs for o in self.outputs]
        if not values:
            return None
        return float("nan") if any(v is None or v != v for v in values) else max(values)

    @property
    def worst(self) -> str:
        """The one-line summary used everywhere a result is shown: label agreement for
        int8, else the largest error; why it failed when nothing could be compared."""
        if self.status == "vacuous":
            return "vacuous"
        if self.profile == "int8" and self.label_agreement is not None:
            return f"agree {self.label_agreement:.1%}" + (f" ({self.ties} ties)" if self.ties
                                                          else "")
        if self.max_abs is None:
            return "did not run" if not self.passed else ""
        return f"max|Δ| {self.max_abs:.1e}"


def profile_rules() -> dict[str, dict[str, float | None]]:
    """The element-wise and label rules of each profile, for runtimes outside Python (the
    browser page, the device runners), written into manifests and packages."""
    return {p.name: {"atol": p.atol, "rtol": p.rtol, "min_label_agreement": p.min_label_agreement,
                     "tie_margin": INT8_TIE_MARGIN if p.name == "int8" else 0.0}
            for p in PROFILES.values()}


def batch_sizes(n: int) -> list[int]:
    """Batch sizes to try: 1, an odd size and the full set. Every artifact takes each: its
    runner runs one of a fixed batch in chunks of it (:class:`deploykit.formats.base.Runner`)."""
    odd = min(7, n) if min(7, n) % 2 else max(1, min(7, n) - 1)
    return sorted({1, odd, n})


def chunked(predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
            inputs: dict[str, np.ndarray], batch: int, *, pad: bool = False
            ) -> dict[str, np.ndarray]:
    """``predict`` over ``inputs`` in chunks of ``batch`` rows, the outputs concatenated; with
    ``pad`` (an artifact that takes exactly ``batch`` rows), the last chunk is padded
    (:func:`padded`). The one chunking path: runners of fixed-batch artifacts, parity and the
    sources use it."""
    n = len(next(iter(inputs.values())))
    if n == 0 or (n == batch if pad else n <= batch):
        return predict(inputs)
    parts = []
    for i in range(0, n, batch):
        rows = {k: v[i:i + batch] for k, v in inputs.items()}
        parts.append(padded(predict, rows, batch) if pad else predict(rows))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def padded(predict: Callable, rows: Any, batch: int) -> Any:
    """``predict`` on fewer than ``batch`` rows for an artifact that takes exactly ``batch``:
    repeat the last row up to ``batch`` and drop the extra outputs. ``rows`` (and what
    ``predict`` returns) is an array or a dict of arrays."""
    as_dict = isinstance(rows, dict)
    arrays = rows if as_dict else {"": rows}
    n = len(next(iter(arrays.values())))
    if n == batch:
        return predict(rows)
    fill = {k: np.concatenate([v, np.repeat(v[-1:], batch - n, axis=0)]) for k, v in arrays.items()}
    out = predict(fill if as_dict else fill[""])
    return {k: v[:n] for k, v in out.items()} if isinstance(out, dict) else out[:n]


def check(target: str, profile: str, predict: Callable, probe: Probe) -> ParityResult:
    """Compare an artifact's ``predict`` with the probe's reference outputs.

    ``predict`` takes a dict of input arrays and returns a dict of outputs named as in the
    reference. The probe set is run in chunks of 1 and of an odd size (its first
    :data:`SMALL_BATCH_ROWS` rows) and whole (see :func:`batch_sizes`), each compared
    element-wise; the statistics and the label and metric verdicts come from the whole
    set's run.
    """
    prof = PROFILES[profile]
    failures: list[str] = []
    batches: dict[str, str] = {}
    full: dict[str, np.ndarray] | None = None  # outputs of the rows in ``seen``: the whole
    seen = probe  # set's run, else the first run that gave outputs (a fixed batch of 1)
    for b in batch_sizes(probe.n):
        rows = probe if b == probe.n else probe.head(SMALL_BATCH_ROWS)
        try:
            got = chunked(predict, rows.inputs, b)
        except Exception as e:  # any runtime failure at this batch size is a parity failure
            first = (str(e).strip().splitlines() or [""])[0]
            batches[str(b)] = f"error: {type(e).__name__}: {first[:300]}"
            failures.append(f"batch size {b}: {batches[str(b)]}")
            continue
        batches[str(b)] = "ok"
        bad = _compare(got, rows, prof)
        if bad:
            batches[str(b)] = "mismatch"
            failures += [f"batch size {b}: {m}" for m in bad]
        if _comparable(got, rows) and (b == probe.n or full is None):
            full, seen = got, rows
    if full is None:  # no run gave outputs of the reference's names and shapes
        return ParityResult(target, profile, False, batches=batches, failures=failures)
    stats = [_stats(k, full[k], seen.reference[k], prof) for k in seen.reference]
    decisive = _decisive(seen, prof)
    agree, topk = _labels(full, seen, decisive)
    metric = _metric(full, seen)
    failures += _verdict(prof, seen, agree, metric)
    if prof.name == "int8" and seen.task == "regression":
        key = next(iter(seen.reference))
        fit = r2(seen.reference[key], full[key])  # how well the artifact tracks the original
        if fit < INT8_REGRESSION_MIN_R2:
            failures.append(f"R² of artifact vs original {fit:.4f} < {INT8_REGRESSION_MIN_R2} "
                            f"(profile int8)")
    hollow = vacuous_reason(seen, prof, decisive) if seen is probe else None
    if hollow is None and agree is None and prof.atol is None and seen.task == "classification":
        hollow = (f"no output gives class labels or scores (label, or rows of floats), and "
                  f"profile {prof.name} judges classifiers by label agreement alone: nothing "
                  f"was compared")
    ties = None if decisive is None else int((~decisive).sum())
    return ParityResult(target, profile, not failures and not hollow, stats, agree, topk,
                        metric, batches, failures, hollow, ties)


def _decisive(probe: Probe, prof: Profile) -> np.ndarray | None:
    """int8 classification with class scores: the rows that are not ties (see above)."""
    key = scores_key(probe.reference, probe.scores)
    if prof.name != "int8" or probe.task != "classification" or key is None:
        return None
    p = probe.reference[key]
    if p.shape[1] == 1:  # one sigmoid: how far from the 0.5 threshold
        return np.abs(p[:, 0] - 0.5) * 2 >= INT8_TIE_MARGIN
    top = np.sort(p, axis=1)
    return (top[:, -1] - top[:, -2]) >= INT8_TIE_MARGIN


def min_rows(prof: Profile, task: str) -> int:
    """The fewest probe rows that can show a fault under ``prof``: a label-agreement
    threshold ``t`` below 1 is only resolved by at least ``1 / (1 - t)`` rows."""
    t = prof.min_label_agreement
    if prof.atol is None and task == "classification" and t is not None and t < 1:
        return max(MIN_PROBE_ROWS, int(np.ceil(1 / (1 - t) - 1e-9)))
    return MIN_PROBE_ROWS


SAMPLE_HINT = "(--sample; sample= in Python)"  # where more inputs go (the server says its own)


def vacuous_reason(probe: Probe, prof: Profile, decisive: np.ndarray | None = None
                   ) -> str | None:
    """Why agreement on ``probe`` would prove nothing under ``prof`` (``None``: it can)."""
    need = min_rows(prof, probe.task)
    if probe.n < need:
        return (f"the probe set has {probe.n} row{'' if probe.n == 1 else 's'}; profile "
                f"{prof.name} needs at least {need} "
                f"to detect a fault: pass more sample rows {SAMPLE_HINT}")
    if all(_constant(v) for v in probe.reference.values()):
        return ("the original model gives the same outputs for every probe input, so "
                f"agreement proves nothing: pass varied sample inputs {SAMPLE_HINT}, or check "
                "the model (untrained or collapsed weights?)")
    if decisive is not None and decisive.sum() < need:
        return (f"only {int(decisive.sum())} of {probe.n} probe rows are decisive at int8 "
                f"resolution (the original's top two classes closer than {INT8_TIE_MARGIN:.4f} "
                f"on the rest); profile int8 needs {need}: pass more rows, or rows the model "
                f"is surer about")
    return None


def _constant(ref: np.ndarray) -> bool:
    """Every row of ``ref`` is the same (to float32 resolution)."""
    if len(ref) < 2:
        return True
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    spread = np.ptp(r, axis=0).max(initial=0.0)
    return bool(spread <= 1e-6 * max(1.0, float(np.abs(r).max(initial=0.0))))


def _comparable(got: dict[str, np.ndarray], probe: Probe) -> bool:
    return all(k in got and np.shape(got[k]) == v.shape for k, v in probe.reference.items())


def _compare(got: dict[str, np.ndarray], probe: Probe, prof: Profile) -> list[str]:
    """Element-wise and shape checks for one batch-size run (profile fp32/fp16)."""
    out = []
    for name, ref in probe.reference.items():
        if name not in got:
            out.append(f"output '{name}' missing (got {sorted(got)})")
            continue
        a = np.asarray(got[name])
        if a.shape != ref.shape:
            out.append(f"output '{name}': shape {a.shape} != reference {ref.shape}")
            continue
        if ref.dtype.kind in "iu":
            if prof.name == "fp32" and not np.array_equal(a, ref):
                out.append(f"output '{name}': label agreement "
                           f"{np.mean(a == ref):.4f} < 1.0 (profile fp32)")
        elif prof.atol is not None:
            tol = prof.atol + prof.rtol * np.abs(ref)
            err = np.abs(a.astype(np.float64) - ref)
            if not np.all(err <= tol):  # NaN never compares <=, so it fails here too
                out.append(f"output '{name}': max_abs {err.max():.3g} exceeds atol {prof.atol:g} "
                           f"+ rtol {prof.rtol:g}·|ref| on {np.mean(err > tol):.2%} of elements")
    return out


def _stats(name: str, a: np.ndarray, ref: np.ndarray, prof: Profile) -> OutputStats:
    a64, r64 = np.asarray(a, np.float64).reshape(ref.shape), ref.astype(np.float64)
    err = np.abs(a64 - r64)
    rel = err / np.maximum(np.abs(r64), 1e-12)
    tol = (prof.atol or 0.0) + prof.rtol * np.abs(r64)
    return OutputStats(name, float(err.max(initial=0)), float(rel.max(initial=0)),
                       float(err.mean()) if err.size else 0.0,
                       float(np.mean(err <= tol)) if prof.atol is not None else None)


def scores_key(outputs: Mapping[str, np.ndarray], named: str | None = None) -> str | None:
    """A classifier's output of class scores: ``named`` (the signature's ``scores``),
    else ``probabilities``, else the first output of rows of floats (a bundle written before
    signatures named it)."""
    for key in (named, "probabilities"):
        if key in outputs:
            return key
    return next((k for k, v in outputs.items()
                 if np.ndim(v) == 2 and np.asarray(v).dtype.kind == "f"), None)


def class_indices(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """A classifier's ``label`` output when it holds integers (a model may name a float
    output so: a score, a regression), else ``None``."""
    label = outputs.get("label")
    return None if label is None or np.asarray(label).dtype.kind not in "iu" \
        else np.asarray(label)


def predicted_labels(outputs: Mapping[str, np.ndarray], key: str | None) -> np.ndarray | None:
    """A classifier's class index per row: its ``label`` output, else from the scores under
    ``key``: the top class, or for one column (a sigmoid) 1 where it reaches 0.5. Only an
    integer ``label`` is one (a model may name a float output so: a score, a regression)."""
    label = class_indices(outputs)
    if label is not None:
        return label.reshape(-1)
    if key is None or key not in outputs:
        return None
    p = np.asarray(outputs[key])
    p = p.reshape(len(p), -1)
    return (p[:, 0] >= 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)


def _labels(got: dict[str, np.ndarray], probe: Probe, decisive: np.ndarray | None = None):
    """Label agreement (over the decisive rows when given) and top-k of the reference."""
    key = scores_key(probe.reference, probe.scores)
    ref, mine = predicted_labels(probe.reference, key), predicted_labels(got, key)
    if probe.task != "classification" or ref is None or mine is None:
        return None, None
    agree = float(np.mean(mine == ref)) if decisive is None or not decisive.any() else \
        float(np.mean(mine[decisive] == ref[decisive]))
    topk = None
    if key is not None and key in got and np.shape(got[key])[1] > 1:
        p = np.asarray(got[key])
        order = np.argsort(-p, axis=1)
        topk = {f"top{k}": float(np.mean([r in order[i, :k] for i, r in enumerate(ref)]))
                for k in (1, min(3, p.shape[1]))}
    return agree, topk


def _metric(got: dict[str, np.ndarray], probe: Probe) -> dict[str, float] | None:
    """The task metric of artifact and original on the true targets (when known)."""
    if probe.y is None:
        return None
    if probe.task == "classification":
        key = scores_key(probe.reference, probe.scores)
        mine, ref = predicted_labels(got, key), predicted_labels(probe.reference, key)
        if mine is None or ref is None:
            return None
        a, o = float(np.mean(mine == probe.y)), float(np.mean(ref == probe.y))
        return {"name": "accuracy", "artifact": a, "original": o, "drop": o - a}
    key = next(iter(probe.reference))
    a, o = r2(probe.y, got[key]), r2(probe.y, probe.reference[key])
    return {"name": "r2", "artifact": a, "original": o, "drop": o - a}


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = y.reshape(-1).astype(np.float64), np.asarray(pred, np.float64).reshape(-1)
    return float(1 - np.sum((y - pred) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-12))


def _verdict(prof: Profile, probe: Probe, agree: float | None,
             metric: dict[str, float] | None) -> list[str]:
    out = []
    if prof.min_label_agreement is not None and agree is not None and \
            agree < prof.min_label_agreement and prof.name != "fp32":
        out.append(f"label agreement {agree:.4f} < {prof.min_label_agreement} "
                   f"(profile {prof.name})")
    if prof.max_metric_drop is not None and metric is not None:
        limit = prof.max_metric_drop if probe.task == "classification" \
            else REGRESSION_INT8_MAX_R2_DROP
        if metric["drop"] > limit:
            out.append(f"{metric['name']} drop {metric['drop']:.4f} > {limit} "
                       f"(profile {prof.name})")
    return out
