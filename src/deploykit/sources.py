"""Framework adapters: recognise a model, describe it, and run the original.

:func:`detect` accepts a model folder written by ``deploykit train``, a model file or folder
(``.keras``, ``.skops``, ``.pt2``, ``.onnx``, a SavedModel), or an in-memory model
(scikit-learn estimator or Pipeline, ``keras.Model`` under either backend, ``tf.Module``
with a serving ``tf.function``, ``torch.nn.Module``, ``torch.export.ExportedProgram``).
It returns a :class:`Source`: the graph node where routes start, the signature (dynamic
batch), the task and labels, how to write the model into a bundle's work area, and the
original framework's predictions on the probe inputs.
"""

from __future__ import annotations

import re
import shutil
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._runlog import current
from deploykit.errors import DataError, DeploykitError, InputError, SourceError
from deploykit.parity import Probe
from deploykit.signature import Signature, TensorSpec, format_shape
from deploykit.sklearn_words import decoded
from deploykit.words import listed

PROBE_ROWS = 64  # random probe rows when neither a test split nor a sample is available


@dataclass
class Source:
    node: str
    framework: str
    signature: Signature
    task: str
    labels: list[str]
    write: Callable[[Path], str]  # writes the model under a folder, returns its relative path
    probe_inputs: dict[str, np.ndarray]  # by input name, in the signature's order
    reference: dict[str, np.ndarray]
    y: np.ndarray | None = None
    calibration: np.ndarray | None = None
    backend: str | None = None
    name: str = ""  # a model folder's dataset-flow; else export names it after its bundle
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    image_shape: list[int] | None = None  # when each input row is an image (h, w, c)
    fixed_batch: int | None = None  # a program exported at a fixed batch that stays fixed
    notes: list[str] = field(default_factory=list)  # what deploykit changed, for the manifest
    shorter: Probe | None = None  # the probe cut along the open axes (see Probe.shorter)


def _module_of(obj: Any) -> set[str]:
    return {c.__module__.split(".")[0] for c in type(obj).__mro__}


def detect(model: Any, *, sample: np.ndarray | Mapping[str, np.ndarray] | str | Path | None
           = None, task: str | None = None, labels: list[str] | None = None) -> Source:
    """Recognise ``model`` and build its :class:`Source`.

    Args:
        model: a model object, a model file or folder.
        sample: example inputs: an array, arrays by input name for a model with several, or
            a ``.npy``/``.npz`` file of either (see :func:`read_sample`); for a scikit-learn
            model fitted on a DataFrame, a DataFrame or a ``.csv`` file.
        task: ``classification`` or ``regression`` when the outputs do not say.
        labels: class names.

    Raises:
        SourceError: a model deploykit cannot export, or a sample it needs and lacks.
        InputError: a sample that does not fit the model's inputs.
        DataError: a sample file that cannot be read.
    """
    if isinstance(sample, (str, Path)):
        sample = read_sample(sample)
    with _warnings_logged():
        source = _detect(model, sample, task, labels)
    if sample is None and source.y is None:  # not a model folder's own test split
        source.notes.append(f"no sample given: parity was checked on {PROBE_ROWS} random "
                            f"rows (standard normal; ids across their range), which may not "
                            f"look like your data; pass example inputs (--sample, sample=)")
    return source


@contextmanager
def _warnings_logged() -> Iterator[None]:
    """The frameworks' warnings while a model is read (torch.export's about a GRU's
    ``_flat_weights``, say) go to the run log, not the user's terminal; from Python (no run
    log) to the ``deploykit.native`` logger at DEBUG, as the runtimes' own output does."""
    import logging
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            log = current()
            for w in caught:
                text = f"{w.category.__name__} reading the model: {w.message} ({w.filename}:" \
                       f"{w.lineno})"
                if log is not None:
                    log.write(text + "\n")
                else:
                    logging.getLogger("deploykit.native").debug("%s", text)


def _detect(model: Any, sample, task: str | None, labels: list[str] | None) -> Source:
    if isinstance(model, (str, Path)):
        return _from_path(Path(model), sample, task, labels)
    mods = _module_of(model)
    if "keras" in mods:
        return _keras_memory(model, sample, task, labels)
    if "sklearn" in mods:
        return _sklearn_memory(model, sample, labels)
    if "torch" in mods:
        return _torch_memory(model, sample, task, labels)
    if "tensorflow" in mods:
        return _tf_memory(model, sample, task, labels)
    raise SourceError(f"cannot export a {type(model).__module__}.{type(model).__name__}: pass a "
                      f"scikit-learn estimator, keras.Model, tf.Module, torch.nn.Module, "
                      f"torch.export program, a model file, or a deploykit model folder")


def read_sample(path: str | Path, what: str = "sample") -> Any:
    """Example inputs from a ``.npy`` file (one input), or a ``.npz`` file: its one array, or
    ``X`` beside ``y`` and ``ref.*`` (a model folder's test split), else one array per input
    name (``x`` and ``mask`` are two inputs, not one called ``x``). A ``.csv`` file (a header
    of column names, then rows) is read as a pandas DataFrame, for a model fitted on one
    (its columns by name, words where it takes them).

    Args:
        path: the file.
        what: how errors name it (the CLI says ``--sample``).

    Returns:
        An array, arrays by input name, or a DataFrame.

    Raises:
        DataError: the file cannot be read, or holds neither of those.
    """
    if str(path).lower().endswith(".csv"):
        return _csv_sample(Path(path), what)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        why = "not a .npy or .npz file" if "pickled" in str(e) else e  # numpy's last guess
        raise DataError(f"cannot read {what} {path}: {why}") from None
    if not hasattr(data, "files"):
        return data
    key = next((k for k in ("X", "x", "inputs") if k in data.files), None)
    split = {k for k in data.files if k == "y" or k.startswith("ref.")}  # a model's test split
    if key is not None and set(data.files) <= {key} | split:
        return data[key]
    if len(data.files) > 1:  # several inputs, by name
        return {k: data[k] for k in data.files}
    if data.files:
        return data[data.files[0]]
    raise DataError(f"{what} {path}: expected an array 'X' (one input) or one array per input "
                    f"name, found {data.files}")


def _csv_sample(path: Path, what: str):
    from deploykit._lazy import require

    pd = require("pandas", purpose=f"to read a .csv {what}")
    try:  # only an empty cell is missing: "NA" (Namibia) and "None" are words
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, ValueError, UnicodeDecodeError) as e:  # pandas' ParserError is a ValueError
        raise DataError(f"cannot read {what} {path}: {' '.join(str(e).split())}") from None
    if frame.empty:
        raise DataError(f"{what} {path}: no rows under its header")
    return frame


# -- model folders written by `deploykit train` -------------------------------------------------
def _from_folder(folder: Path) -> Source:
    from deploykit.training import read_card, read_test_split

    card = read_card(folder)
    X, y, ref = read_test_split(folder)
    fw = card["framework"]
    node, rel = {"sklearn": ("sklearn", card["files"].get("model")),
                 "keras": ("keras", card["files"].get("model")),
                 "torch": ("torch", card["files"].get("program")),
                 "tensorflow": ("saved_model", card["files"].get("saved_model"))}[fw]
    write = _copier(folder / rel, "model/1" if node == "saved_model" else Path(rel).name)
    sig = Signature.from_dict(card["signature"])
    return Source(node, fw, sig, card["task"]["kind"], card["task"]["labels"], write,
                  {sig.inputs[0].name: X}, ref, y, _calibration(card, X),
                  card.get("backend"), f"{card['dataset']['name']}-{card['flow']}",
                  card["metrics"], card["versions"], card["dataset"].get("image_shape"))


def _calibration(card: dict[str, Any], fallback: np.ndarray) -> np.ndarray:
    """Training inputs for int8 calibration, rebuilt from the card's dataset and seed (the
    probe rows when that file is gone, or its columns or words changed since)."""
    from deploykit.data import load_dataset, split_dataset
    from deploykit.errors import DataError

    src, trained = card["dataset"]["source"], card["signature"]["inputs"][0]
    try:
        ds = load_dataset(src.removeprefix("builtin:"), task=card["task"]["kind"],
                          label_column=card["dataset"].get("label_column"))
        same = list(ds.feature_names) == card["dataset"]["feature_names"] and \
            [w.to_dict() for w in ds.words] == trained.get("words", []) and \
            [f.to_dict() for f in ds.filled] == trained.get("filled", [])
        return split_dataset(ds, seed=card["split"]["seed"]).X_train if same else fallback
    except (DataError, KeyError):
        return fallback


def _copier(src: Path, dest_rel: str) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        dest = root / dest_rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
        return dest_rel
    return write


def _writer(data: bytes, dest_rel: str) -> Callable[[Path], str]:
    def write(root: Path) -> str:
        (root / dest_rel).write_bytes(data)
        return dest_rel
    return write


# -- files ----------------------------------------------------------------------------------------
def _from_path(p: Path, sample, task, labels) -> Source:
    if not p.exists():
        raise SourceError(f"model not found: {p}")
    if (p / "deploykit-model.json").is_file():
        if sample is not None or task or labels:  # they were dropped without a word
            raise SourceError(f"{p} is a model folder: its probe set (the test split), task "
                              f"and labels come from it; sample, task and labels are for a "
                              f"model file (--sample, --task)")
        return _from_folder(p)
    if p.suffix == ".keras":
        from deploykit.formats.keras import load_keras

        with _reading(p, "a file of keras.Model.save; deploykit loads it in safe mode, so "
                         "Lambda layers and custom layers not registered in Keras cannot load"):
            model = load_keras(p, "to export a .keras file")[1]
        return _keras_memory(model, sample, task, labels, file=p)
    if p.suffix == ".skops":
        from deploykit.training.sklearn_path import load_estimator

        with _reading(p, "a file of skops.io.dump"):
            model = load_estimator(p)
        return _sklearn_memory(model, sample, labels)
    if p.suffix == ".pt2":
        from deploykit.formats.torch_program import load_program

        with _reading(p, "a program of torch.export.save (torch.save files are not programs)"):
            program = load_program(p)
        return _torch_memory(program, sample, task, labels, file=p)
    if p.suffix == ".onnx":
        return _onnx_file(p, sample, task, labels)
    if (p / "saved_model.pb").is_file():
        return _saved_model_dir(p, sample, task, labels)
    hint = {".pt": "; a PyTorch model saved with torch.save or torch.jit.save: save it with "
                   "torch.export.save as .pt2, or pass the nn.Module from Python",
            ".h5": "; a legacy Keras file: save it again as .keras "
                   "(keras.saving.load_model('model.h5').save('model.keras'))"}
    hint = hint.get({".pth": ".pt", ".ptl": ".pt", ".hdf5": ".h5"}.get(p.suffix, p.suffix), "")
    raise SourceError(f"{p}: not a model deploykit recognises (.keras, .skops, .pt2, .onnx, "
                      f"a SavedModel folder, or a deploykit model folder){hint}")


@contextmanager
def _reading(p: Path, what: str) -> Iterator[None]:
    """A framework's failure to load the user's file, as a one-line SourceError saying what
    the file should be (its traceback goes to the run log): it was an "internal error"."""
    try:
        yield
    except DeploykitError:
        raise
    except Exception as e:  # noqa: BLE001  (each framework's loader raises its own kinds)
        log = current()
        if log is not None:
            log.write(f"loading {p}:\n{''.join(traceback.format_exception(e))}")
        cause = " ".join(str(e).split())
        cause = cause if len(cause) <= 200 else cause[:200] + " ..."
        raise SourceError(f"{p}: cannot load it ({type(e).__name__}: {cause}); expected "
                          f"{what}") from None


# -- helpers shared by in-memory sources ----------------------------------------------------------
def _probe(signature: Signature, sample) -> dict[str, np.ndarray]:
    """The probe inputs by name: the sample, checked against the signature, or random rows."""
    names = [s.name for s in signature.inputs]
    if sample is not None and len(names) > 1 and not isinstance(sample, Mapping):
        raise SourceError(f"the model takes {len(names)} inputs ({', '.join(names)}): pass one "
                          f"sample array per input name (an .npz with arrays named so; a dict "
                          f"in Python)")
    if sample is not None:
        inputs = signature.validate(sample)
        empty = [k for k, v in inputs.items() if not len(v)]
        if empty:
            raise InputError(f"the sample for input '{empty[0]}' has no rows: pass example "
                             f"inputs (parity needs 16 rows or more to prove anything)")
        return inputs
    rng, inputs = np.random.default_rng(0), {}
    for spec in signature.inputs:
        shape = [PROBE_ROWS if d is None else d for d in spec.shape]
        if spec.range is not None:  # token ids: any in the model's table
            inputs[spec.name] = rng.integers(spec.range[0], spec.range[1] + 1,
                                             shape).astype(spec.dtype)
            continue
        if np.dtype(spec.dtype).kind in "iu":
            raise SourceError(f"input '{spec.name}' takes integers ({spec.dtype}: token ids or "
                              f"category codes?) and deploykit cannot guess their valid range: "
                              f"pass example inputs with --sample (sample= in Python)")
        inputs[spec.name] = rng.normal(size=shape).astype(spec.dtype)
        for w in spec.words:  # columns of words: codes of any of them
            inputs[spec.name][:, w.column] = rng.integers(0, len(w.words), shape[0])
    return inputs


def _sample_of(spec: TensorSpec, sample):
    """The part of ``sample`` for input ``spec`` (a bare array is the only input's)."""
    return sample.get(spec.name) if isinstance(sample, Mapping) else sample


def _looks_like_probabilities(out: np.ndarray) -> bool:
    return out.ndim == 2 and out.shape[1] > 1 and out.min() >= 0 and \
        bool(np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def _described(raw: dict[str, np.ndarray], task: str | None, labels: list[str] | None
               ) -> tuple[str, dict[str, np.ndarray], tuple[TensorSpec, ...], str | None,
                          list[str]]:
    """Task, reference outputs, output specs, the output of class scores and labels from the
    original's outputs by name.

    A classifier is a model with an output that looks like class probabilities (rows of
    non-negative numbers summing to one) or one given ``labels`` (logits, a sigmoid column),
    unless ``task`` says otherwise. One output is named ``probabilities`` (a classifier's) or
    ``predictions``; several keep the model's names, and a classifier's scores are its first
    output that looks like probabilities (else its first output), named ``probabilities``
    only where the model gave it no name (``output_1`` of a tuple).
    """
    names = list(raw)
    task, probs = _task_of(raw, task, labels)
    if len(names) == 1:
        names = ["probabilities" if task == "classification" else "predictions"]
    elif task == "classification" and re.fullmatch(r"output_\d+", names[probs or 0]) \
            and "probabilities" not in names:
        names[probs or 0] = "probabilities"
    if len(set(names)) != len(names):
        raise SourceError(f"the model's outputs need distinct names; they would be {names}")
    ref = {n: _as_reference(v) for n, v in zip(names, raw.values(), strict=True)}
    specs = tuple(TensorSpec(n, str(v.dtype), (None, *v.shape[1:])) for n, v in ref.items())
    scores = names[probs or 0] if task == "classification" else None
    return task, ref, specs, scores, _labels_for(task, _classes(ref, scores), labels)


def _task_of(raw: Mapping[str, np.ndarray], task: str | None, labels: list[str] | None
             ) -> tuple[str, int | None]:
    """The task (given, or a classifier when an output looks like class probabilities or
    ``labels`` are given) and the position of its scores (:func:`_scores_at`)."""
    at = _scores_at(list(raw.values()), labels)
    return task or ("classification" if at is not None or labels else "regression"), at


def _scores_at(values: list[np.ndarray], labels: list[str] | None) -> int | None:
    """Where a classifier's scores are: the first output that looks like probabilities. With
    ``labels``, the first output of rows of floats as wide as they are (one column for two:
    a sigmoid), preferring one that looks like probabilities, then a column within [0, 1],
    so logits or a sigmoid after another head are found too."""
    probs = [i for i, v in enumerate(values) if _looks_like_probabilities(v)]
    if not labels:
        return probs[0] if probs else None
    widths = {len(labels), 1} if len(labels) == 2 else {len(labels)}
    fits = [i for i, v in enumerate(values)
            if v.dtype.kind == "f" and v.ndim == 2 and v.shape[1] in widths]
    unit = [i for i in fits if values[i].shape[1] == 1 and values[i].min() >= 0 and
            values[i].max() <= 1]
    return next((i for i in [*probs, *unit, *fits] if i in fits), probs[0] if probs else None)


def _classes(ref: Mapping[str, np.ndarray], scores: str | None) -> int:
    """How many classes the scores output gives (0: not a classifier)."""
    if scores is None:
        return 0
    out = ref[scores]
    return out.shape[-1] if out.ndim > 1 else 0


def _as_reference(out: np.ndarray) -> np.ndarray:
    """An output in the shape the model gives it: floats as float32, integers (labels, ids)
    kept."""
    out = np.asarray(out)
    return out.astype(out.dtype if out.dtype.kind in "iu" else np.float32)


def _labels_for(task: str, n: int, labels: list[str] | None) -> list[str]:
    """A classifier's class names: ``labels``, else the class numbers; ``n`` score columns
    are ``n`` classes, one (a sigmoid) two."""
    if task != "classification":
        if labels:
            raise SourceError(f"labels given for a {task} model; labels name a classifier's "
                              "classes (drop them, or pass task='classification')")
        return []
    n = max(n, 2)
    if labels and len(labels) != n:
        raise SourceError(f"{len(labels)} labels given for a classifier of {n} classes; "
                          f"pass one name per class, in class order")
    return list(labels) if labels else [str(i) for i in range(n)]


def _input_from_shape(shape, dtype: str, name: str = "x") -> TensorSpec:
    """An input's spec (:func:`_spec_from_shape`), refused by name unless it takes numbers."""
    try:
        numeric = np.dtype(dtype).kind in "biuf"
    except TypeError:  # TensorFlow's string, resource, variant...: not numpy's
        numeric = False
    if not numeric:
        raise SourceError(f"input '{name}' takes {dtype} values; deploykit exports models of "
                          f"numeric inputs (turn text into numbers before the model)")
    return _spec_from_shape(shape, dtype, name)


def _spec_from_shape(shape, dtype: str = "float32", name: str = "x") -> TensorSpec:
    dims = [None if d is None or (isinstance(d, int) and d < 0) else int(d) for d in shape]
    dims[0] = None  # dynamic batch by default
    return TensorSpec(name, dtype, tuple(dims))


def _fixed_lengths(spec: TensorSpec, sample) -> tuple[TensorSpec, list[str]]:
    """The spec with its dynamic non-batch dimensions (a sequence length, an image size)
    fixed to the sample's, and a note saying so. Mobile and browser converters need static
    shapes (TFLite cannot lower a recurrent loop of unknown length, tracing bakes one in), so
    every artifact takes that length and inputs are validated against it."""
    open_axes = [i for i, d in enumerate(spec.shape) if i > 0 and d is None]
    if not open_axes:
        return spec, []
    shown = format_shape(spec.shape)
    sample = _sample_of(spec, sample)
    if sample is None:
        raise SourceError(f"input '{spec.name}' has dynamic dimensions {shown}: pass example "
                          f"inputs at the length to export at with --sample (sample= in Python)")
    sample = np.asarray(sample)
    if sample.ndim != len(spec.shape):
        raise SourceError(f"input '{spec.name}' takes {shown}; the sample has shape "
                          f"{format_shape(sample.shape)}")
    dims = tuple(None if i == 0 else (sample.shape[i] if d is None else d)
                 for i, d in enumerate(spec.shape))
    fixed = replace(spec, shape=dims, open_axes=tuple(open_axes))
    return fixed, [f"input '{spec.name}' takes {shown}; deploykit exported it at the sample's "
                   f"{format_shape(dims)} (static shapes for the mobile and browser "
                   f"converters): artifacts take exactly that, pad or cut inputs to it, "
                   f"except those marked any_length (proved at a shorter length too)"]


# -- scikit-learn -----------------------------------------------------------------------------------
def _sklearn_memory(model, sample, labels) -> Source:
    n = _sklearn_checked(model)
    model = _by_position(model)
    classify = hasattr(model, "predict_proba")
    task = "classification" if classify else "regression"
    _refuse_text_predictions(model, classify)
    names = getattr(model, "feature_names_in_", None)  # fitted on a DataFrame
    columns = None if names is None else [str(c) for c in names]
    words = _sklearn_words(model, columns, n, sample)
    coded = words.model if words else model  # what every artifact is made from
    taking = Signature.single(n, columns=columns, missing=True,
                              words=words.columns if words else ()).inputs[0]
    inputs = _probe(Signature((taking,)), sample)
    missing = bool(np.isnan(inputs["x"]).any()) or any(  # the model must fill them
        w.missing is not None and np.isnan(w.missing) for w in taking.words)
    decode = None if words is None else (lambda rows: decoded(words, rows, columns))
    holes = _missing_rows(model, inputs["x"], task, decode) \
        if missing or _has_imputer(model) else None
    if holes is not None:  # every artifact is then proved to fill them as the model does
        holes = taking.coded(holes).astype(np.float32)  # a word's missing value as its code
        inputs, missing = {"x": np.concatenate([inputs["x"], holes])}, True
    ref = _sklearn_reference(model, inputs["x"] if words is None else decode(inputs["x"]),
                             task)
    if classify:
        classes = [str(c) for c in model.classes_]
        outs = [TensorSpec("label", "int64", (None,)),
                TensorSpec("probabilities", "float32", (None, len(classes)))]
    else:
        outs = [TensorSpec("predictions", "float32", (None, ref["predictions"].shape[1]))]
    sig = Signature.single(n, outs, columns=columns, missing=missing,
                           words=words.columns if words else ())

    def write(root: Path) -> str:
        import skops.io as sio

        sio.dump(coded, root / "model.skops")
        return "model.skops"

    notes = _float32_notes(model, sig.inputs[0], sample, ref, task) + (
        [_words_note(words)] if words else [])
    return Source("sklearn", "sklearn", sig, task,
                  _labels_for(task, len(classes) if classify else 0, labels or
                              (classes if classify else None)), write, inputs, ref, notes=notes)


def _sklearn_words(model, columns: list[str] | None, n: int, sample):
    """The model's columns of words and the copy of it taking their codes (None without);
    a sample's column of text that no encoder of the model takes is refused by name."""
    from deploykit.sklearn_words import words_of

    names = columns or [f"x[:, {j}]" for j in range(n)]
    text = _text_columns(sample)
    words = words_of(model, names, frozenset(names.index(c) for c in text if c in names))
    taken = {w.name for w in words.columns} if words else set()
    text = [c for c in text if c not in taken]
    if text:
        raise SourceError(f"column '{text[0]}' of the sample holds text, and the model takes "
                          f"numbers there; deploykit takes words into a OneHotEncoder or "
                          f"OrdinalEncoder fitted on them (after a SimpleImputer, if any), in a "
                          f"ColumnTransformer or first in a Pipeline")
    return words


def _text_columns(sample) -> list[str]:
    """The names of a pandas DataFrame sample's columns that hold neither numbers nor
    booleans (text, categories)."""
    if type(sample).__name__ != "DataFrame" or not type(sample).__module__.startswith("pandas"):
        return []
    return [str(c) for c, t in zip(sample.columns, sample.dtypes, strict=True)
            if getattr(t, "kind", "O") not in "biuf"]


def _words_note(words) -> str:
    return (f"columns of words: {listed(words.columns)}; every artifact takes each word as "
            f"its position in the encoder's categories (its code), and Bundle.predict, the "
            f"server and verify take the words themselves")


def _by_position(model):
    """``model``, or a copy whose ColumnTransformers (nested ones too) select their columns by
    position where they name them (a model fitted on a DataFrame), pick them with a boolean
    mask or a ``make_column_selector``: every artifact takes an array of the input's
    ``columns``, in that order, skl2onnx and the compiler need positions, and skops refuses
    the selector's ``dtype_include=object`` in deploykit's copy."""
    import copy

    from deploykit.sklearn_words import fitted_parts

    def transformers(model) -> list[Any]:
        return [v for v in fitted_parts(model) if type(v).__name__ == "ColumnTransformer"]

    if not any(any(_positions(ct, c) is not c for _, _, c in ct.transformers_) or
               any(callable(c) for _, _, c in ct.transformers) for ct in transformers(model)):
        return model
    model = copy.deepcopy(model)
    for ct in transformers(model):
        ct.transformers_ = [(n, t, _positions(ct, c)) for n, t, c in ct.transformers_]
        ct.transformers = [(n, t, _positions(ct, c)) for (n, t, _), c in
                           zip(ct.transformers, ct._columns, strict=True)]  # selectors run
        ct._columns = [_positions(ct, c) for c in ct._columns]
    return model


def _positions(ct, columns):
    """A ColumnTransformer's selection of columns by position: names and boolean masks
    become positions; anything else (positions, a slice) is returned as it is."""
    names = list(getattr(ct, "feature_names_in_", []))
    if isinstance(columns, str) and columns in names:
        return names.index(columns)
    if isinstance(columns, (list, tuple, np.ndarray)) and len(columns) and \
            all(isinstance(c, str) and c in names for c in columns):
        return [names.index(c) for c in columns]
    if isinstance(columns, (list, tuple, np.ndarray)) and len(columns) == ct.n_features_in_ \
            and np.asarray(columns).dtype == bool:
        return np.flatnonzero(columns).tolist()
    return columns


def _has_imputer(model) -> bool:
    return any(type(v).__name__.endswith("Imputer") for v in _sklearn_parts(model))


def _missing_rows(model, x: np.ndarray, task: str,
                  decode: Callable[[np.ndarray], Any] | None = None) -> np.ndarray | None:
    """Rows of ``x`` with values missing (NaN) in the columns the model fills (an imputer's,
    or every column for trees), each such column in one row at least, 16 to 32 rows, so
    parity proves every artifact fills them as the model does; None when it fills none (an
    imputer of another marker, ``-1``). ``decode`` turns rows of codes into the words the
    model takes."""
    def fills(rows: np.ndarray) -> bool:
        return _predicts(model, rows if decode is None else decode(rows), task)

    n = x.shape[1]
    single = x[np.arange(n) % len(x)].copy()
    single[np.arange(n), np.arange(n)] = np.nan
    if fills(single):
        fillable = np.arange(n)
    else:  # an imputer of some columns only (in a ColumnTransformer)
        fillable = np.array([j for j in range(min(n, 256)) if fills(single[j:j + 1])], int)
    if not len(fillable):
        return None
    k = min(32, max(16, len(fillable)))  # rows: columns cycled, or grouped when more
    groups = np.array_split(fillable, k) if len(fillable) > k else \
        [fillable[[i % len(fillable)]] for i in range(k)]
    rows = x[np.arange(k) % len(x)].copy()
    for i, columns in enumerate(groups):
        rows[i, columns] = np.nan
    return rows if fills(rows) else single[fillable[:32]]


def _predicts(model, rows: np.ndarray, task: str) -> bool:
    """Whether the model gives finite outputs for ``rows``."""
    try:
        out = _sklearn_reference(model, rows, task)
    except SourceError:
        return False
    return all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f")


def _sklearn_checked(model) -> int:
    """The number of features of a fitted estimator deploykit can export.

    Raises:
        SourceError: naming what cannot be exported and what to do instead.
    """
    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise SourceError("the scikit-learn model is not fitted (no n_features_in_)")
    if not hasattr(model, "predict"):
        raise SourceError(f"{type(model).__name__} has no predict: deploykit exports models "
                          f"that predict (classifiers, regressors, outlier detectors); a "
                          f"transformer goes in a Pipeline before one")
    _refuse_categorical_hist_boosting(model)
    if isinstance(getattr(model, "classes_", None), list):  # one array of classes per target
        raise SourceError(f"{type(model).__name__} classifies several targets at once; "
                          f"deploykit exports a classifier of one target: export one per "
                          f"target (a MultiOutputClassifier's estimators_[i], or a classifier "
                          f"fitted on each column of y)")
    return int(n)


def _refuse_text_predictions(model, classify: bool) -> None:
    """A classifier without ``predict_proba`` is exported for its ``predict`` (the class value,
    a number); one whose classes are words cannot be."""
    classes = np.asarray(getattr(model, "classes_", [0]))
    if not classify and classes.dtype.kind not in "biuf":
        raise SourceError(f"{type(model).__name__} has no predict_proba and its classes are "
                          f"not numbers ({', '.join(map(str, classes[:3]))}, ...): wrap it in "
                          f"CalibratedClassifierCV for probabilities and named classes, or fit "
                          f"it on LabelEncoder codes")


def _sklearn_reference(model, x: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """The estimator's own outputs on the probe rows (a model fitted on a DataFrame takes
    them as an array here, as its artifacts do: scikit-learn's warning about it is moot)."""
    import warnings

    from deploykit.training.sklearn_path import predict

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return predict(model, x, task)
    except Exception as e:
        hint = f"one float32 array of {x.shape[1]} columns"
        if "dtype mismatch" in str(e):
            hint += ("; fitted on float64, it cannot predict on float32 rows, which every "
                     "artifact takes: fit it on X.astype(np.float32)")
        elif any(type(v).__name__ == "ColumnTransformer" for v in _sklearn_parts(model)):
            hint += "; a ColumnTransformer must select its columns by position, not by name"
        raise _fails_on_sample(e, hint) from e


def _sklearn_parts(model) -> list[Any]:
    """The estimator and every estimator inside it (a Pipeline's steps, their parameters)."""
    return [model, *(v for v in model.get_params(deep=True).values() if hasattr(v, "fit"))]


def _float32_notes(model, spec: TensorSpec, sample, ref: dict[str, np.ndarray],
                   task: str) -> list[str]:
    """Every artifact takes float32 rows, and parity compares it with the model on them; a
    model whose own predictions change when a float64 sample is rounded to float32 (trees
    and HistGradientBoosting compare float64 thresholds) differs from what the user sees,
    so the user is told how much, and what to do."""
    raw = spec.ordered(_sample_of(spec, sample)) if sample is not None else None
    if type(raw).__name__ != "DataFrame" or not spec.words:  # a frame of words stays one
        raw = None if raw is None else np.asarray(raw)
    if raw is None or not _wide_floats(raw):
        return []
    try:
        wide = _sklearn_reference(model, raw, task)
    except SourceError:
        return []
    ref = {k: v[:len(raw)] for k, v in ref.items()}  # without rows of missing values added
    key = "probabilities" if task == "classification" else "predictions"
    gap = float(np.abs(wide[key].astype(np.float64) - ref[key]).max(initial=0.0))
    scale = 1.0 if task == "classification" else max(1.0, float(np.abs(wide[key]).max()))
    flipped = int((wide["label"] != ref["label"]).sum()) if task == "classification" else 0
    if gap <= 1e-4 * scale and not flipped:
        return []
    labels = f" ({flipped} of {len(raw)} labels)" if flipped else ""
    return [f"the model's own predictions change when the float64 sample is rounded to "
            f"float32, as every artifact takes it: by up to {gap:.3g}{labels}; artifacts "
            f"are checked against the model on float32 rows. Fit it on X.astype(np.float32) "
            f"for artifacts that match it exactly"]


def _wide_floats(raw) -> bool:
    """Whether an array is float64, or a DataFrame has a float64 column, of finite values
    (NaN: missing)."""
    if isinstance(raw, np.ndarray):
        return raw.dtype == np.float64 and not np.isinf(raw).any()
    wide = [c for c, t in zip(raw.columns, raw.dtypes, strict=True) if t == np.float64]
    return bool(wide) and not np.isinf(raw[wide].to_numpy()).any()


def _refuse_categorical_hist_boosting(model) -> None:
    """HistGradientBoosting with ``categorical_features``: skl2onnx's conversion predicts
    otherwise than scikit-learn (half the probabilities off on breast-cancer rows) and the
    compiler has no categorical splits yet; a parity failure would not say why."""
    for est in _sklearn_parts(model):
        categorical = getattr(est, "is_categorical_", None)  # None: no categorical feature
        if categorical is not None and np.any(categorical):
            raise SourceError(f"{type(est).__name__} with categorical_features is not "
                              f"supported yet; one-hot encode those columns instead "
                              f"(OneHotEncoder in a ColumnTransformer before it)")


# -- Keras ----------------------------------------------------------------------------------------
def _keras_memory(model, sample, task, labels, file: Path | None = None) -> Source:
    import keras

    from deploykit.id_ranges import keras_rows

    _refuse_custom_layers(keras, model)
    names = ["x"] if len(model.inputs) == 1 else [str(t.name) for t in model.inputs]
    specs, notes = _all_fixed_lengths(
        [_input_from_shape(t.shape, str(t.dtype), n) for t, n in zip(model.inputs, names,
                                                                     strict=True)], sample)
    specs = _with_ranges(specs, keras_rows(model))
    inputs = _probe(Signature(tuple(specs)), sample)
    feed = list(inputs.values())
    out = model.predict(feed[0] if len(feed) == 1 else feed, verbose=0)  # the model as it is
    task, ref, outs, scores, labels = _described(_keras_named(model, out), task, labels)
    if notes:  # the bundle keeps the model rebuilt on the fixed-shape inputs
        model, file = _on_inputs(keras, model, specs), None

    def write(root: Path) -> str:
        if file is not None:
            shutil.copy2(file, root / "model.keras")
        else:
            model.save(root / "model.keras")
        return "model.keras"

    return Source("keras", "keras", Signature(tuple(specs), outs, scores), task, labels, write,
                  inputs,
                  ref, backend=keras.backend.backend(), versions={"keras": keras.__version__},
                  notes=notes)


def _refuse_custom_layers(keras, model) -> None:
    """A layer (or model) class of the user's own, or a Lambda: deploykit's converters reload
    the model in other processes, in Keras's safe mode, where neither loads; every cell
    failed with Keras's "could not be deserialized properly"."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        kind = type(layer)
        if isinstance(layer, keras.layers.Lambda):
            raise SourceError(f"layer '{layer.name}' is a Lambda, which Keras reloads only "
                              f"outside its safe mode (a saved Lambda runs arbitrary code); "
                              f"deploykit's converters keep safe mode on: write it with "
                              f"Keras's own layers")
        if not kind.__module__.startswith(("keras", "deploykit")):
            raise SourceError(f"layer '{layer.name}' is {kind.__name__} from {kind.__module__}, "
                              f"not a Keras layer: deploykit's converters reload the model in "
                              f"other processes, where your classes are not defined; build "
                              f"the model from Keras's own layers")


def _keras_named(model, out) -> dict[str, np.ndarray]:
    """Keras outputs (an array, a list or a dict) by the model's output names, in order."""
    from deploykit.formats.keras import output_names

    names = output_names(model)
    if isinstance(out, dict):
        return {n: np.asarray(out[n]) for n in names}
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return {n: np.asarray(o) for n, o in zip(names, outs, strict=True)}


def _on_inputs(keras, model, specs: list[TensorSpec]):
    """The Keras model rebuilt on inputs of ``specs``' (fixed) shapes, same weights."""
    tensors = [keras.Input(batch_shape=s.shape, dtype=s.dtype) for s in specs]
    try:
        copy = keras.models.clone_model(model, input_tensors=tensors[0] if len(tensors) == 1
                                        else tensors)
    except Exception as e:  # a subclassed model has no graph to rebuild
        shapes = ", ".join(str(list(s.shape[1:])) for s in specs)
        raise SourceError(f"the Keras model has dynamic input dimensions and cannot be rebuilt "
                          f"at a fixed shape ({type(e).__name__}: {e}); build it on "
                          f"keras.Input of {shapes} and export that") from e
    copy.set_weights(model.get_weights())
    return copy


# -- PyTorch --------------------------------------------------------------------------------------
def _torch_memory(model, sample, task, labels, file: Path | None = None) -> Source:
    """A PyTorch module (in eval mode while it is read; then back in the mode it came in:
    exporting a user's module left it in eval mode) or a ``torch.export`` program."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return _torch_source(model, sample, task, labels, file)
    training = model.training
    try:
        return _torch_source(model.eval(), sample, task, labels, file)
    finally:
        model.train(training)


def _torch_source(model, sample, task, labels, file: Path | None) -> Source:
    import torch

    from deploykit.formats.torch_program import with_dynamic_batch
    from deploykit.id_ranges import torch_rows

    program = model if isinstance(model, torch.export.ExportedProgram) else None
    fixed, notes = None, []
    if program is not None:
        specs, fixed = _program_inputs(program)
        specs, notes = _all_fixed_lengths(specs, sample)
        original = (program.module(), fixed)  # the reference: the user's program as it is
        if fixed is not None:  # exported at a fixed batch: make the batch dynamic if it can be
            dynamic = with_dynamic_batch(program, [s.to_dict() for s in specs], fixed)
            notes.append(f"the torch.export program was exported at a fixed batch of {fixed} "
                         f"rows; " + ("deploykit re-exported it with a dynamic batch" if dynamic
                                      else "its graph depends on that batch, so " + _STAYS))
            if dynamic is not None:
                program, fixed, file = dynamic, None, None
    elif sample is None:
        raise SourceError("a torch.nn.Module does not declare its input shape: pass "
                          "sample=<array of example inputs> (--sample FILE)")
    else:
        specs = [_spec_from_shape(a.shape, _sample_dtype(a), name)
                 for name, a in _named(sample).items()]
        _runs_on(model, sample, specs)  # the module's own error, not torch.export's log
        program, fixed = _export_module(model, specs)
        if fixed:
            notes.append(f"torch.export could not give the module a dynamic batch (it "
                         f"computes with the batch size), so it was exported at {fixed} rows and "
                         + _STAYS)
    specs = _with_ranges(specs, torch_rows(program))
    inputs = _probe(Signature(tuple(specs)), sample)
    # the reference: the user's own module, eagerly, or their program at the batch it takes
    module, chunk = (model, None) if isinstance(model, torch.nn.Module) else original
    with torch.no_grad():
        out = _in_chunks(lambda rows: _torch_named(module(*map(torch.from_numpy, rows.values()))),
                         inputs, chunk)
    task, ref, outs, scores, labels = _described(out, task, labels)
    sig = Signature(tuple(specs), outs, scores)
    shorter = _shorter(torch, module, chunk, sig, inputs, task)

    def write(root: Path) -> str:
        if file is not None:
            shutil.copy2(file, root / "model.pt2")
        else:
            torch.export.save(program, root / "model.pt2")
        return "model.pt2"

    return Source("torch", "torch", sig, task, labels, write, inputs, ref,
                  versions={"torch": torch.__version__}, fixed_batch=fixed, notes=notes,
                  shorter=shorter)


def _shorter(torch, module, chunk: int | None, sig: Signature, inputs: dict[str, np.ndarray],
             task: str) -> Probe | None:
    """The probe rows cut to a shorter length along the inputs' open axes (each length ``n``
    to ``n - max(1, n // 4)``), with the user's program's outputs on them; ``None`` when no
    input has an open axis or the program refuses that length. Artifacts that agree on these
    too take any length (:attr:`Artifact.any_length`)."""
    if not any(s.open_axes for s in sig.inputs):
        return None
    cut = {}
    for s in sig.inputs:
        x = inputs[s.name]
        for axis in s.open_axes:
            n = x.shape[axis]
            if n < 2:  # nothing shorter to try
                return None
            x = np.take(x, range(n - max(1, n // 4)), axis=axis)
        cut[s.name] = np.ascontiguousarray(x)
    try:
        with torch.no_grad():
            out = _in_chunks(lambda rows: _torch_named(module(*map(torch.from_numpy,
                                                                    rows.values()))),
                             cut, chunk)
    except Exception:  # the program's length range stops short of it
        return None
    names = [o.name for o in sig.outputs]
    return Probe(cut, {n: _as_reference(v) for n, v in zip(names, out.values(), strict=True)},
                 None, task, scores=sig.scores)


def _fails_on_sample(e: Exception, given: str) -> SourceError:
    """The original model failing on the sample: a typed error with its own reason."""
    return SourceError(f"the model fails on the sample ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:300]}); it was given {given}")


def _runs_on(module, sample, specs: list[TensorSpec]) -> None:
    """Run ``module`` on two rows of ``sample`` as the ``specs`` type it (a sample of the
    wrong width, or a module of another dtype)."""
    import torch

    named = list(_named(sample).values())
    try:
        with torch.no_grad():
            module(*(torch.from_numpy(np.ascontiguousarray(a[:2], s.dtype))
                     for a, s in zip(named, specs, strict=True)))
    except Exception as e:
        raise _fails_on_sample(e, "; ".join(f"{s.name}: {np.dtype(s.dtype)} of shape "
                                            f"{list(a.shape)}" for a, s in
                                            zip(named, specs, strict=True))) from e


def _named(sample) -> dict[str, np.ndarray]:
    """A sample as arrays by input name (a bare array is the one input ``x``)."""
    if isinstance(sample, Mapping):
        return {str(k): np.asarray(v) for k, v in sample.items()}
    return {"x": np.asarray(sample)}


def _with_ranges(specs: list[TensorSpec], rows: dict[int, int]) -> list[TensorSpec]:
    """``specs`` with the valid ids ``[0, rows - 1]`` of the inputs (by position) that index
    an embedding table of ``rows`` rows (also a float input: Keras's Embedding truncates it)."""
    def top(i: int, dtype: str) -> int:
        kind = np.dtype(dtype).kind
        return min(rows[i] - 1, int(np.iinfo(dtype).max)) if kind in "iu" else rows[i] - 1

    return [replace(s, range=(0, top(i, s.dtype)))
            if i in rows and np.dtype(s.dtype).kind in "iuf" else s
            for i, s in enumerate(specs)]


def _all_fixed_lengths(specs: list[TensorSpec], sample) -> tuple[list[TensorSpec], list[str]]:
    fixed = [_fixed_lengths(s, sample) for s in specs]
    return [f for f, _ in fixed], [n for _, notes in fixed for n in notes]


_STAYS = ("its artifacts take exactly that many rows (manifest: batch); deploykit runs them in "
          "chunks of it, the last one padded")


def _export_module(module, specs: list[TensorSpec]):
    """``torch.export`` a module with a dynamic batch; where its code pins the batch (a
    Python ``int`` of a size, say), at the standard example batch, which then stays fixed."""
    from deploykit.formats.torch_program import EXAMPLE_BATCH, export_program, with_batch

    dynamic = {"inputs": [s.to_dict() for s in specs]}
    try:
        return export_program(module, dynamic), None
    except Exception:
        pass
    try:
        return export_program(module, with_batch(dynamic, EXAMPLE_BATCH)), EXAMPLE_BATCH
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise SourceError(f"torch.export cannot export this module ({type(e).__name__}: "
                          f"{first}); make its forward traceable (see the log)") from e


def _program_inputs(program) -> tuple[list[TensorSpec], int | None]:
    """The program's input specs (dynamic batch), named as its graph names them, and its
    batch when that was fixed at export."""
    names = list(program.graph_signature.user_inputs)
    vals = {n.name: n.meta["val"] for n in program.graph.nodes if n.name in names}
    specs, batches = [], set()
    for name in names:
        val = vals[name]
        if not hasattr(val, "shape"):
            raise SourceError(f"the torch program's input '{name}' is not a tensor; deploykit "
                              f"exports programs whose inputs are all tensors")
        shape = [d if isinstance(d, int) else None for d in val.shape]
        specs.append(_spec_from_shape(shape, str(val.dtype).removeprefix("torch."), name))
        batches.add(shape[0])
    return specs, (batches.pop() if len(batches) == 1 else None)


def _sample_dtype(sample: np.ndarray) -> str:
    """Float samples run as float32; integer samples (token ids, codes) keep their dtype."""
    if sample.dtype.kind in "iu":
        return str(sample.dtype)
    if sample.dtype.kind == "f":
        return "float32"
    raise SourceError(f"the sample (--sample, sample=) has dtype {sample.dtype}; pass numbers "
                      f"(float or integer ids)")


def _torch_named(out) -> dict[str, np.ndarray]:
    """A module's outputs by name: a tensor, a tuple or list (``output_0``, ...) or a dict."""
    import torch

    if isinstance(out, torch.Tensor):
        return {"output_0": out.detach().numpy()}
    items = out.items() if isinstance(out, Mapping) else \
        ((f"output_{i}", o) for i, o in enumerate(out)) if isinstance(out, (tuple, list)) else ()
    named = {str(k): v for k, v in items}
    if not named or not all(isinstance(v, torch.Tensor) for v in named.values()):
        raise SourceError(f"the torch model returns {type(out).__name__}; deploykit exports "
                          f"models that return a tensor, or a flat tuple, list or dict of "
                          f"tensors")
    return {k: v.detach().numpy() for k, v in named.items()}


def _in_chunks(fn: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
               inputs: dict[str, np.ndarray], batch: int | None) -> dict[str, np.ndarray]:
    """``fn`` over ``inputs`` in chunks of a fixed ``batch`` (the last one padded), or at once."""
    from deploykit.parity import chunked

    return fn(inputs) if batch is None else chunked(fn, inputs, batch, pad=True)


# -- TensorFlow core ------------------------------------------------------------------------------
def _tf_memory(model, sample, task, labels) -> Source:
    import tensorflow as tf

    fn = None
    for attr in ("serve", "__call__"):
        f = getattr(model, attr, None)
        if f is not None and getattr(f, "input_signature", None):
            fn = f
            break
    if fn is None and getattr(model, "input_signature", None):
        fn, model = model, tf.Module()
        model.serve = fn
    if fn is None:
        raise SourceError("a tf.Module needs a tf.function with an input_signature "
                          "(as .serve or __call__) to be exported")

    def write(root: Path) -> str:
        tf.saved_model.save(model, str(root / "model" / "1"),
                            signatures={"serving_default": fn.get_concrete_function()})
        return "model/1"

    given = fn.input_signature  # a dict of specs is several inputs, named by their keys
    named = sorted(given[0].items()) if len(given) == 1 and isinstance(given[0], Mapping) else \
        [(s.name or f"#{i}", s) for i, s in enumerate(tf.nest.flatten(given))]
    _one_input([name for name, _ in named], "tf.function")
    sig_in, fixed, notes = _tf_input(named[0][1], sample)
    inputs = _probe(Signature((sig_in,)), sample)
    task, ref, outs, scores, labels = _described(_in_chunks(
        lambda r: _tf_named(fn(tf.constant(r["x"]))), inputs, fixed), task, labels)
    return Source("saved_model", "tensorflow", Signature((sig_in,), outs, scores), task, labels,
                  write, inputs, ref, versions={"tensorflow": tf.__version__}, notes=notes,
                  fixed_batch=fixed)


def _tf_input(spec, sample) -> tuple[TensorSpec, int | None, list[str]]:
    """A TensorFlow input's spec (any batch), the batch its signature fixes (None: any), and
    the notes on both."""
    shape = spec.shape.as_list()
    sig_in, notes = _fixed_lengths(_input_from_shape(shape, spec.dtype.name, "x"), sample)
    fixed = shape[0] if shape and isinstance(shape[0], int) else None
    if fixed:
        notes.append(f"the TensorFlow signature fixes a batch of {fixed}, so " + _STAYS)
    return sig_in, fixed, notes


def _tf_named(out) -> dict[str, np.ndarray]:
    """A tf.function's outputs by name: a tensor, a tuple or list, or a dict (in sorted key
    order, as TensorFlow flattens it and its converters list it; a loaded signature's dict
    comes back in no fixed order)."""
    if isinstance(out, Mapping):
        return {str(k): np.asarray(out[k]) for k in sorted(out)}
    outs = out if isinstance(out, (tuple, list)) else [out]
    return {f"output_{i}": np.asarray(o) for i, o in enumerate(outs)}


def _saved_model_dir(p: Path, sample, task, labels) -> Source:
    from deploykit.formats.saved_model import serving_function

    with _reading(p, "a SavedModel folder with a 'serving_default' signature, as "
                     "tf.saved_model.save writes for a tf.Module with a serving tf.function"):
        fn, names = serving_function(p)
    _one_input(names, "SavedModel's serving signature")
    sig_in, fixed, notes = _tf_input(fn.structured_input_signature[1][names[0]], sample)
    inputs = _probe(Signature((sig_in,)), sample)
    import tensorflow as tf

    task, ref, outs, scores, labels = _described(_in_chunks(
        lambda r: _tf_named(fn(**{names[0]: tf.constant(r["x"])})), inputs, fixed), task, labels)
    return Source("saved_model", "tensorflow", Signature((sig_in,), outs, scores), task, labels,
                  _copier(p, "model/1"), inputs, ref, notes=notes, fixed_batch=fixed)


def _one_input(names: list[str], what: str) -> None:
    if len(names) != 1:
        raise SourceError(f"the {what} takes {len(names)} inputs {names}; deploykit exports "
                          f"TensorFlow-core and ONNX models with one input (Keras and PyTorch "
                          f"models may have several)")


# -- ONNX -----------------------------------------------------------------------------------------
def _onnx_file(p: Path, sample, task, labels) -> Source:
    from deploykit._lazy import require

    ort = require("onnxruntime", purpose="to read an ONNX model")
    with _reading(p, "an ONNX model that onnxruntime loads"):
        proto, classes, changed = _plain_onnx(p)
        sess = _onnx_session(ort, proto)
    _one_input([i.name for i in sess.get_inputs()], "ONNX model")
    sig_in, notes = _fixed_lengths(_onnx_input(sess.get_inputs()[0], proto), sample)
    if sig_in.dtype == "float16":
        notes.append("the ONNX model computes in float16: the artifacts converted from it "
                     "compute in float32, so they differ from it by float16's rounding "
                     "(about 1e-3 of each value), beyond the fp32 profile's tolerance")
    inputs = _probe(Signature((sig_in,)), sample)
    fixed = _onnx_fixed_batch(sess)
    ref = _onnx_reference(sess, inputs, fixed)  # the file's own answers, at its batch
    if fixed:
        proto, fixed, note = _onnx_any_batch(ort, sess, proto, fixed, inputs, ref)
        notes.append(note)
        changed = changed or not fixed
    specs = tuple(_spec_from_shape(v.shape, str(v.dtype), n) for n, v in ref.items())
    # a file with an ai.onnx.ml classifier names its classes: a classifier, also when its
    # scores are margins (LinearSVC, raw_scores), not probabilities
    task, probs = _task_of(ref, task or ("classification" if classes else None), labels or classes)
    scores = _onnx_scores(ref, probs) if task == "classification" else None
    n = _classes(ref, scores) if task == "classification" else 0
    named = classes if classes and len(classes) == max(n, 2) else None  # the file's own
    write = _writer(proto.SerializeToString(), "model.onnx") if changed else \
        _copier(p, "model.onnx")
    return Source("onnx", "onnx", Signature((sig_in,), specs, scores), task,
                  _labels_for(task, n, labels or named), write, inputs, ref, notes=notes,
                  fixed_batch=fixed)


_ONNX_INPUTS = {"tensor(float)": "float32", "tensor(double)": "float64",
                "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _onnx_session(ort, proto, quiet: bool = False):
    """A session on ``proto``; ``quiet``: its failures are expected, not logged on stderr."""
    options = ort.SessionOptions()
    if quiet:
        options.log_severity_level = 4  # fatal only
    return ort.InferenceSession(proto.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _onnx_input(i, proto) -> TensorSpec:
    """The spec of an ONNX model's one input (any batch); integer ids that only index tables
    get their range."""
    from deploykit.formats.onnx import id_range

    if i.type not in _ONNX_INPUTS:
        raise SourceError(f"the ONNX model's input '{i.name}' is a {i.type}; deploykit reads "
                          f"ONNX models whose input is float16, float32, float64, int32 or int64")
    spec = _spec_from_shape([d if isinstance(d, int) else None for d in i.shape],
                            _ONNX_INPUTS[i.type], "x")
    ids = id_range(proto, i.name) if np.dtype(spec.dtype).kind == "i" else None
    return replace(spec, range=ids) if ids else spec


def _onnx_reference(sess, inputs: dict[str, np.ndarray], fixed: int | None
                    ) -> dict[str, np.ndarray]:
    """The model's outputs by name on the probe rows (in chunks of its ``fixed`` batch).

    Raises:
        SourceError: an output without a row per input row (its batch axis squeezed away).
    """
    name, names = sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()]
    ref = _in_chunks(lambda r: dict(zip(names, map(np.asarray, sess.run(None, {name: r["x"]})),
                                        strict=True)), inputs, fixed)
    rows = len(inputs["x"])
    for k, v in ref.items():
        if v.ndim == 0 or len(v) != rows:
            raise SourceError(f"the ONNX model's output '{k}' has no row per input row (shape "
                              f"{list(v.shape)} for {rows} rows); deploykit exports models "
                              f"whose outputs keep the batch axis: export it with one")
    return ref


def _onnx_fixed_batch(sess) -> int | None:
    """The batch an ONNX model's input fixes (None: any)."""
    first = sess.get_inputs()[0].shape[0] if sess.get_inputs()[0].shape else None
    return first if isinstance(first, int) and first > 0 else None


def _onnx_any_batch(ort, sess, proto, fixed: int, inputs: dict[str, np.ndarray],
                    want: dict[str, np.ndarray]):
    """An ONNX model saved at a fixed batch (``torch.onnx.export`` without dynamic axes): the
    model with its batch opened when it then gives its answers ``want`` in any batch (probed
    here), else the model as it is and its fixed batch. Returns ``(proto, fixed or None,
    note)``."""
    from deploykit.formats.onnx import with_any_batch

    x, name = inputs["x"], sess.get_inputs()[0].name
    opened = with_any_batch(proto)
    try:
        any_sess = _onnx_session(ort, opened, quiet=True)
        same = all(np.allclose(got, want[k][:len(rows)], rtol=1e-4, atol=1e-5, equal_nan=True)
                   for rows in (x, x[:fixed + 1], x[:1])
                   for k, got in zip(want, any_sess.run(None, {name: rows}), strict=True))
    except Exception:  # noqa: BLE001  (onnxruntime refuses the other batch: a reshape to it)
        same = False
    if same:
        return opened, None, (f"the ONNX model was saved at a fixed batch of {fixed}; deploykit "
                              f"opened it to any batch (it gives the same answers)")
    return proto, fixed, (f"the ONNX model was saved at a fixed batch of {fixed} and its graph "
                          f"depends on that batch, so " + _STAYS)


def _plain_onnx(p: Path):
    """The ONNX model in one piece (external data read in), a scikit-learn classifier's
    ZipMap and class-value labels made plain tensors
    (:func:`deploykit.formats.onnx.plain_classifier`), outputs named ``output_i`` where
    torch.onnx.export named them after an op, and its class names. Returns
    ``(proto, class names or None, whether it differs from the file)``."""
    import onnx

    from deploykit.formats.onnx import plain_classifier, plain_output_names

    proto = onnx.load(str(p))  # with any external data (weights in files beside it)
    size = proto.ByteSize()
    if size >= 2 ** 31:
        raise SourceError(f"{p}: its weights are over 2 GB; deploykit keeps an ONNX model in "
                          f"one file, which protobuf limits to 2 GB")
    external = size != p.stat().st_size  # else the file is the model as it is
    classes = plain_classifier(proto)
    renamed = plain_output_names(proto)
    return proto, None if classes is None else [str(c) for c in classes], \
        external or renamed or classes is not None


def _onnx_scores(ref: Mapping[str, np.ndarray], probs: int | None) -> str | None:
    """An ONNX classifier's scores: the first output that looks like probabilities, else
    ``probabilities``, else its first output of rows of floats (logits)."""
    if probs is not None:
        return list(ref)[probs]
    from deploykit.parity import scores_key

    return scores_key(ref)
