"""deploykit edge runner: run a deploykit package on a small device.

Depends on numpy and ONE runtime -- ai-edge-litert, tflite-runtime or onnxruntime, whichever
is installed -- and never imports deploykit, TensorFlow or PyTorch.

    python run.py PACKAGE --verify              re-run the probe set, print parity, exit 1 on failure
    python run.py PACKAGE --input x.npy         print predictions for the rows of x.npy
    python run.py PACKAGE --serve [--port 8080] minimal HTTP endpoint (standard library only):
                                                POST /predict {"instances": [[...], ...]}
                                                (rows of {column: value} too, and words, for
                                                a model fitted on a table)
    --target NAME                               the artifact to run (tflite-int8, onnx, ...);
                                                default: the first whose runtime is here

The package's package.json lists each artifact with its sha256; every file is checked
before it is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


SELF_DIGEST = "package_sha256"


def content_digest(meta: dict) -> str:
    """The sha256 of package.json's content without its own digest (keys sorted, compact):
    an edited package.json (a target, a label, a file's sha256) no longer matches."""
    content = {k: v for k, v in meta.items() if k != SELF_DIGEST}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def load_package(root: Path) -> dict:
    try:
        meta = json.loads((root / "package.json").read_text())
        damaged = meta.get(SELF_DIGEST) != content_digest(meta)
    except (OSError, ValueError, AttributeError) as e:
        sys.exit(f"error: {root / 'package.json'} cannot be read ({one_line(e, 120)}); is "
                 f"{root} a deploykit package? If so, copy it again")
    if damaged:
        sys.exit("error: package.json was changed after packaging (it no longer matches its "
                 f"own {SELF_DIGEST}); copy the package again")
    for rel, digest in meta["sha256"].items():
        p = (root / rel).resolve()
        if root.resolve() not in p.parents or not p.is_file() or sha256(p) != digest:
            sys.exit(f"error: {rel} is missing or does not match its sha256; the package is "
                     f"damaged -- copy it again")
    return meta


@contextlib.contextmanager
def native_stderr_quiet():
    """Hide what a runtime's C++ code prints while it loads ("INFO: Created TensorFlow Lite
    XNNPACK delegate for CPU."); a load that fails still raises with its own message."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TfliteModel:
    def __init__(self, path: Path) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter
        with native_stderr_quiet():
            self.interpreter = Interpreter(model_path=str(path))
            self.runner = self.interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()
        self.quiet = native_stderr_quiet  # the delegate is applied (and announced) on first run

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        name, detail = next(iter(self.inputs.items()))
        with self.quiet():
            out = self.runner(**{name: _quantize(x, detail)})
        self.quiet = contextlib.nullcontext
        return {k: _dequantize(np.asarray(out[k]), self.outputs[k]) for k in self.outputs}


def _qparams(detail):
    scale, zero = detail.get("quantization", (0.0, 0))
    return (scale, zero) if detail["dtype"] in (np.int8, np.uint8) and scale else None


def _quantize(x, detail):
    q = _qparams(detail)
    if q is None:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / q[0] + q[1]), info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    q = _qparams(detail)
    return y if q is None else ((y.astype(np.float32) - q[1]) * q[0]).astype(np.float32)


class OnnxModel:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, {self.name: x})))


def available(artifact: dict) -> bool:
    import importlib.util

    if artifact["runtime"] == "tflite":
        return any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime"))
    if artifact["runtime"] == "onnx":
        return importlib.util.find_spec("onnxruntime") is not None
    return False


RUNTIMES = {"tflite": ("ai-edge-litert", "tflite-runtime"), "onnx": ("onnxruntime",)}


def runtime_name(artifact: dict) -> str:
    import importlib.metadata as md

    for dist in RUNTIMES[artifact["runtime"]]:
        try:
            return f"{dist} {md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    return artifact["runtime"]


def first_loadable(root: Path, meta: dict):
    """The first artifact whose runtime is installed and loads it, with its model."""
    errors = []
    for art in meta["artifacts"]:
        if available(art):
            try:
                return art, open_model(root, art)
            except Exception as e:
                errors.append(f"{art['target']}: {one_line(e, 200)}")
    sys.exit("error: no artifact of this package loads here (install ai-edge-litert, "
             "tflite-runtime or onnxruntime)" + "".join(f"\n  {m}" for m in errors))


def named(meta: dict, target: str) -> dict:
    """The artifact ``--target`` names (exit 2 naming the package's, when it has none)."""
    for art in meta["artifacts"]:
        if art["target"] == target:
            return art
    print(f"error: --target {target}: this package has "
          f"{', '.join(a['target'] for a in meta['artifacts'])}", file=sys.stderr)
    raise SystemExit(2)


def installed(art: dict) -> dict:
    """``art`` when its runtime is installed here (exit 2 naming what to install)."""
    if not available(art):
        runtimes = RUNTIMES.get(art["runtime"], (f"{art['runtime']} (phone.py runs it)",))
        print(f"error: --target {art['target']} runs on {' or '.join(runtimes)}, not "
              f"installed here", file=sys.stderr)
        raise SystemExit(2)
    return art


def chosen(root: Path, meta: dict, target: str | None):
    """The artifact to run and its model: the one ``--target`` names, else the first that
    loads here."""
    if target is None:
        return first_loadable(root, meta)
    art = installed(named(meta, target))
    try:
        return art, open_model(root, art)
    except Exception as e:
        sys.exit(f"error: {target} does not load here: {one_line(e, 200)}")


def open_model(root: Path, artifact: dict):
    cls = {"tflite": TfliteModel, "onnx": OnnxModel}[artifact["runtime"]]
    return cls(root / artifact["path"])


def predict(model, artifact: dict, x: np.ndarray, main: str) -> np.ndarray:
    """The output named ``main`` (probabilities or predictions), batch by batch for
    fixed-batch models."""
    b = artifact.get("batch") or len(x)
    parts = []
    for i in range(0, len(x), b):  # a fixed batch's last chunk is padded with its last row
        chunk = x[i:i + b]
        full = np.concatenate([chunk, np.repeat(chunk[-1:], b - len(chunk), axis=0)])
        outs = model(full if artifact.get("batch") else chunk)
        out = np.asarray(outs[main] if main in outs else list(outs.values())[-1])
        parts.append(out[:len(chunk)].reshape(len(chunk), -1))
    return np.concatenate(parts)


def request_rows(values, spec: dict):
    """A request's rows as the model takes them: rows of ``{column: value}`` in the spec's
    column order, and each column of words' words as their codes (see :func:`word_code`).
    Raises ValueError naming the problem."""
    columns = spec.get("columns")
    if columns and isinstance(values, list) and values and \
            all(isinstance(r, dict) for r in values):
        values = [{k if k in columns else str(k).strip(): v for k, v in r.items()}
                  for r in values]  # a .csv's "city, size" header
        for i, r in enumerate(values):
            if set(r) != set(columns):
                raise ValueError(f"instance {i}: features do not match the model's: missing "
                                 f"{[c for c in columns if c not in r][:5] or 'none'}, unknown "
                                 f"{sorted(set(r) - set(columns))[:5] or 'none'}")
        values = [[r[c] for c in columns] for r in values]
    words = {w["column"]: w for w in spec.get("words", ())}
    if not (words or spec.get("filled")) or not isinstance(values, list):
        return values
    rows = [list(r) if isinstance(r, list) else r for r in values]
    names = columns or [f"{spec['name']}[:, {j}]" for j in range(spec["shape"][1])]
    for row in rows:
        for j, cell in enumerate(row if isinstance(row, list) else ()):
            row[j] = word_code(cell, words[j]) if j in words else \
                number(cell, names[j] if j < len(names) else str(j))
    return rows


GAPS = {"", "?", "-", "--", "missing", "unknown", "#n/a", "#n/a n/a", "#na", "-1.#ind",
        "-1.#qnan", "-nan", "1.#ind", "1.#qnan", "<na>", "n/a", "na", "null", "nan", "none"}


def number(cell, name: str):
    """A cell of a column of numbers: text that is a number as that number (pandas reads a
    column with a gap marker as text), a gap marker (``?``, ``n/a``, empty) as null. Raises
    ValueError naming the column for other text."""
    if not isinstance(cell, str):
        return cell
    if cell.strip().lower() in GAPS:
        return None
    if not _is_number(cell):
        raise ValueError(f"column '{name}' takes numbers, got {cell[:40]!r}")
    return float(cell)


def word_code(value, column: dict) -> float:
    """One cell of a column of words (package.json's ``signature.inputs[0].words``) as the
    model takes it: a word's position among the column's words; a number is a code (checked),
    except in a column whose words are numbers, where it is the word it spells; null is a
    missing value, where the model has a code for one. Raises ValueError naming the column."""
    known, name = column["words"], column["name"]
    if not known:
        return 0.0  # a column the model does not read
    if value is None or (isinstance(value, float) and value != value):
        if column.get("missing") is None:
            raise ValueError(f"column '{name}': a missing value, which this model does not fill")
        return float(column["missing"])
    if isinstance(value, bool):  # a column of true/false words
        value = next((w for w in (str(value), str(value).lower(), str(value).upper())
                      if w in known), value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"column '{name}' takes words, got {value!r:.40}")
    values = {}  # words that are numbers, by value ("1" and "1.0" are 1): the first's code
    for i, k in enumerate(known):
        if k is not None and _is_number(k):
            values.setdefault(float(k), i)
    if not isinstance(value, str) and not values:
        check_codes(np.array([value], dtype=np.float64), column)
        return float(value)
    word = value if not isinstance(value, str) or value in known else value.strip()
    if word in known:
        return float(known.index(word))
    if values and (not isinstance(word, str) or _is_number(word)) and float(word) in values:
        return float(values[float(word)])
    if not isinstance(value, str):
        value = str(int(value)) if float(value).is_integer() else repr(float(value))
    if column.get("unknown") is not None:
        return float(column["unknown"])
    shown = ", ".join('""' if k == "" else k for k in known[:8] if k is not None)
    raise ValueError(f"column '{name}': unknown word {value[:40]!r}; the model knows {shown}"
                     + (f", … ({len(known)} words)" if len(known) > 8 else ""))


def check_codes(codes: np.ndarray, column: dict) -> None:
    """Numbers in a column of words must be codes: its words' positions, the codes of an
    unknown word and of a missing value. Raises ValueError naming the first that is not."""
    if not column["words"]:
        return
    extra = [float(column[k]) for k in ("unknown", "missing") if column.get(k) is not None]
    ok = np.isin(codes, np.arange(len(column["words"]))) | np.isin(codes, extra) | (
        np.isnan(codes) & any(c != c for c in extra))
    if not ok.all():
        raise ValueError(f"column '{column['name']}' takes its words or their codes 0 to "
                         f"{len(column['words']) - 1}, got {float(codes[~ok][0]):g}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def model_input(values, meta: dict) -> np.ndarray:
    """Rows for the package's one input, checked against its spec in package.json: numbers
    of its dtype (integer ids stay integers, inside the model's table when the spec gives a
    range; a column of words, codes) and of its shape. Raises ValueError naming the
    problem."""
    spec = meta["signature"]["inputs"][0]
    name, want, shape = spec["name"], np.dtype(spec["dtype"]), spec["shape"]
    x = np.asarray(values)
    if x.dtype == object and (spec.get("missing") or spec.get("filled")):  # JSON null: NaN
        try:
            x = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            pass  # refused below
    if x.dtype == object or x.dtype.kind not in "biuf":
        raise ValueError(f"input '{name}': expected numbers ({want}), got {x.dtype}")
    if x.ndim != len(shape) or not len(x) or any(d is not None and d != n
                                                 for d, n in zip(shape[1:], x.shape[1:])):
        dims = ", ".join("batch" if d is None else str(d) for d in shape)
        raise ValueError(f"input '{name}': expected shape [{dims}], got {list(x.shape)}")
    if want.kind in "iu":
        if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
            raise ValueError(f"input '{name}': takes integers ({want}), got fractions")
        lo, hi = spec.get("range") or (np.iinfo(want).min, np.iinfo(want).max)
        if x.size and (x.min() < lo or x.max() > hi):  # checked before a cast could wrap them
            raise ValueError(f"input '{name}': ids must be in [{lo}, {hi}]; got values from "
                             f"{x.min()} to {x.max()}")
        return x.astype(want)
    lo, hi = spec.get("range") or (-np.inf, np.inf)  # float ids, which the model truncates
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"input '{name}': ids must be in [{lo}, {hi}]; got values from "
                         f"{x.min()} to {x.max()}")
    for column in spec.get("words", ()) if x.ndim == 2 and x.dtype.kind == "f" else ():
        gaps = np.isnan(x[:, column["column"]])
        if gaps.any() and column.get("missing") is not None:
            x = x.copy()  # NaN is a missing value: its code
            x[gaps, column["column"]] = float(column["missing"])
        check_codes(x[:, column["column"]].astype(np.float64), column)
    for column in spec.get("filled", ()) if x.ndim == 2 and x.dtype.kind == "f" else ():
        x = x.copy()  # a gap in the training data's column took its median: so here
        x[np.isnan(x[:, column["column"]]), column["column"]] = column["value"]
    with np.errstate(over="ignore"):  # beyond float32 is Inf: named below, not warned
        x = x.astype(np.float32)
    if np.isinf(x).any() or (np.isnan(x).any() and not spec.get("missing")):
        raise ValueError(f"input '{name}': contains NaN, Inf or values beyond float32's range"
                         if not spec.get("missing") else
                         f"input '{name}': contains Inf or values beyond float32's range "
                         f"(NaN marks a missing value)")
    return x


def read_input(path: Path, meta: dict) -> np.ndarray:
    """The rows of a .npy file, or of a .npz file's array named as the input (or X, or its
    only array), checked by :func:`model_input`. Raises ValueError naming the problem."""
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError:  # numpy's "pickled (object) data" for any file it cannot read
        raise ValueError("not a .npy or .npz file of numbers") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            name = meta["signature"]["inputs"][0]["name"]
            key = next((k for k in (name, "X", "x") if k in data.files),
                       data.files[0] if len(data.files) == 1 else None)
            if key is None:
                raise ValueError(f"an .npz file needs an array named '{name}' or X; it has "
                                 f"{', '.join(data.files) or 'none'}")
            data = data[key]
    return model_input(data, meta)


def one_line(e: BaseException, limit: int = 300) -> str:
    return " ".join(str(e).split())[:limit]


def read_probe(root: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The probe inputs and the original framework's main output for them."""
    with np.load(root / meta["probe"]["inputs"], allow_pickle=False) as z:
        x = z[z.files[0]]
        x = x.astype(np.float32) if x.dtype.kind == "f" else x  # token ids stay integers
    with np.load(root / meta["probe"]["reference"], allow_pickle=False) as z:
        return x, z[meta["main_output"]].reshape(len(x), -1)


def compare(got: np.ndarray, ref: np.ndarray, profile: str, meta: dict) -> tuple[bool, str]:
    """Parity verdict by the artifact's profile, with the rules package.json carries (written
    by deploykit from its own parity profiles), and a one-line summary."""
    rule = meta["profiles"][profile]
    err = np.abs(got - ref)
    agree, scores, want = None, got, ref
    if ref.shape[1] == 1 and meta.get("labels"):  # one sigmoid: the two classes' scores
        scores, want = np.hstack([1 - got, got]), np.hstack([1 - ref, ref])
    if want.shape[1] > 1:  # rows the original cannot separate at the tie margin do not count
        top = np.sort(want, axis=1)
        decisive = (top[:, -1] - top[:, -2]) >= rule.get("tie_margin", 0.0)
        same = scores.argmax(1) == want.argmax(1)
        agree = float(np.mean(same[decisive] if decisive.any() else same))
    passed = rule["atol"] is None or bool(np.all(err <= rule["atol"] + rule["rtol"] * np.abs(ref)))
    if rule["min_label_agreement"] is not None:
        passed = passed and (agree is None or agree >= rule["min_label_agreement"])
    agree_s = "" if agree is None else f"  label agreement {agree:.2%}"
    return passed, f"max|d| {err.max():.2e}{agree_s}  ({profile})"


def run_artifact(root: Path, art: dict, x: np.ndarray, meta: dict):
    """``(outputs, None)``, or ``(None, why)``: the runtime could not load or run it."""
    try:
        model = open_model(root, art)
    except Exception as e:
        return None, f"cannot load it: {one_line(e)}"
    try:
        return predict(model, art, x, meta["main_output"]), None
    except Exception as e:  # e.g. a kernel this runtime lacks for the input type
        return None, f"cannot run it: {one_line(e)}"


def verify(root: Path, meta: dict) -> bool:
    x, ref = read_probe(root, meta)
    ok = True
    ran = 0
    for art in meta["artifacts"]:
        if not available(art):
            print(f"{art['target']:12s} skipped: its runtime is not installed here")
            continue
        ran += 1
        got, failure = run_artifact(root, art, x, meta)
        if failure:  # the runtime refuses the model: say why, and what was known
            ok = False
            print(f"{art['target']:12s} FAIL  {runtime_name(art)} {failure}")
            for rt, lacks in art.get("older_runtimes", {}).items():
                if lacks:
                    print(f"{'':12s}      flagged by deploykit package for {rt}: needs "
                          f"{'; '.join(lacks)}")
            continue
        passed, summary = compare(got, ref, art["profile"], meta)
        ok &= passed
        print(f"{art['target']:12s} {'PASS' if passed else 'FAIL'}  {summary}")
    if ran == 0:
        print("no artifact of this package can run here: install ai-edge-litert, "
              "tflite-runtime or onnxruntime")
        return False
    return ok


def serve(root: Path, meta: dict, port: int, target: str | None = None) -> None:
    art, model = chosen(root, meta, target)
    labels = meta.get("labels", [])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                n = int(self.headers.get("Content-Length", 0))
                if self.path != "/predict" or not 0 <= n <= 8 << 20:
                    raise ValueError("POST /predict with a body under 8 MB")
                body = json.loads(self.rfile.read(n))
                if not isinstance(body, dict) or "instances" not in body:
                    raise ValueError('expected {"instances": [[...], ...]}')
                x = model_input(request_rows(body["instances"], meta["signature"]["inputs"][0]),
                                meta)
                y = predict(model, art, x, meta["main_output"])
                body = {"predictions": y.tolist()}
                if labels:  # one column is a sigmoid: the second class from 0.5 on
                    idx = (y[:, 0] >= 0.5).astype(int) if y.shape[1] == 1 else y.argmax(1)
                    body["labels"] = [labels[i] for i in idx]
                self._send(200, body)
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": str(e)})

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # listening from here on
    print(f"serving {art['target']} on http://127.0.0.1:{port}/predict", flush=True)
    server.serve_forever()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", type=Path)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--verify", action="store_true")
    mode.add_argument("--input", type=Path)
    mode.add_argument("--serve", action="store_true")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--target", help="the artifact to run (default: the first whose runtime "
                                     "is installed; --verify: every one)")
    a = ap.parse_args()
    meta = load_package(a.package)
    if a.verify:
        only = {**meta, "artifacts": [installed(named(meta, a.target))]} if a.target else meta
        return 0 if verify(a.package, only) else 1
    if a.serve:
        serve(a.package, meta, a.port, a.target)
        return 0
    try:
        x = read_input(a.input, meta)
    except (OSError, ValueError) as e:
        print(f"error: {a.input}: {one_line(e)}", file=sys.stderr)
        return 2
    art, model = chosen(a.package, meta, a.target)
    y = predict(model, art, x, meta["main_output"])
    print(json.dumps({"target": art["target"], "predictions": y.tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
