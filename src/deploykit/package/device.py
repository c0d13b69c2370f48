"""Device packages: only what one kind of device needs, self-verifying, deterministic.

``deploykit package BUNDLE --for edge|android|ios|web --out DIR`` copies the chosen
artifacts, the labels, the signature, the probe set and a README for the device engineer
into ``DIR`` and writes ``DIR.zip``. ``package.json`` carries the sha256 of every file (the
edge runner checks them before loading). Nothing time- or machine-dependent is written, and
the zip has fixed timestamps and order, so the same bundle gives the same bytes.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from deploykit import formats, graph, targets
from deploykit._fs import (
    check_replaceable,
    fixed_zip_entry,
    human_bytes,
    replace_dir,
    work_folder_beside,
)
from deploykit.artifact import Artifact
from deploykit.bundle import Bundle, load_bundle, manifest_digest, sha256, tree_size
from deploykit.errors import BundleError
from deploykit.package import tflite_compat, tflite_metadata, web_page
from deploykit.parity import profile_rules

SCHEMA = "deploykit.package/1"
# device kind -> runner files copied into its package (phone.py imports helpers from run.py);
# which artifacts each kind takes is a fact of the formats (graph nodes' ``devices``)
RUNNERS = {
    "edge": ("edge/run.py", "edge/requirements.txt"),
    "android": ("edge/run.py", "mobile/phone.py"),
    "ios": ("edge/run.py", "mobile/phone.py"),
    "web": ("web/serve.py",),  # and the page, with its runtimes (web_page.py)
}


PACKAGE_DIGEST = "package_sha256"  # package.json's own digest, as targets/edge/run.py checks it


def device_targets(device: str) -> list[str]:
    """The targets a device package of kind ``device`` takes, in column order."""
    formats.load()
    return [t for t in graph.targets() if device in graph.NODES[t].devices]


def package(bundle: str | Path, device: str, out: str | Path) -> Path:
    """Write the package folder ``out`` (atomically) and ``out.zip``; return the folder.

    Args:
        bundle: a bundle folder.
        device: ``edge``, ``android``, ``ios`` or ``web``.
        out: the package folder to write (an older package there is replaced).

    Returns:
        The package folder (``out``, resolved); ``out.zip`` is written beside it.

    Raises:
        BundleError: an unknown device, a damaged bundle, no passing artifact for it, or a
            model with several inputs or outputs (the device runners take one of each).
    """
    if device not in RUNNERS:
        raise BundleError(f"unknown device '{device}': use one of {', '.join(RUNNERS)}")
    b = load_bundle(bundle)
    _one_input_one_output(b, bundle)
    takes = device_targets(device)
    chosen = [a for a in b.artifacts if a.target in takes and a.passed]
    if not chosen:
        have = [f"{a.target} ({a.parity.status})" for a in b.artifacts if a.target in takes]
        raise BundleError(f"{bundle} has no passing artifact for {device} (needs one of "
                          f"{', '.join(takes)}; has {', '.join(have) or 'none of them'}: "
                          f"deploykit inspect {bundle} shows why)")
    out = Path(out).resolve()
    check_replaceable(out, "package.json", "a deploykit package", BundleError)
    work = work_folder_beside(out)
    try:
        meta = _fill(b, device, chosen, work)
        (work / "package.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (work / "README.md").write_text(_readme(meta))
        meta["sha256"]["README.md"] = sha256(work / "README.md")
        meta = json.loads(json.dumps(meta))  # as run.py reads it back
        meta[PACKAGE_DIGEST] = manifest_digest(meta, PACKAGE_DIGEST)
        (work / "package.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _zip(out, out.with_name(out.name + ".zip"))  # not with_suffix: pkg/v1.2 -> pkg/v1.2.zip
    return out


def _one_input_one_output(b: Bundle, bundle: str | Path) -> None:
    """Device runners feed one input and read one output (a classifier's integer ``label``
    beside its scores is fine): refuse other models by name, before any work."""
    ins = [s.name for s in b.signature.inputs]
    outs = [s.name for s in b.signature.outputs]
    if len(ins) > 1:
        what = f"takes {len(ins)} inputs {ins}"
    elif len([s for s in b.signature.outputs
              if s.name != "label" or not s.dtype.startswith(("int", "uint"))]) > 1:
        what = f"gives {len(outs)} outputs {outs}"
    else:
        return
    raise BundleError(f"{bundle}: the model {what}; device packages run models with one "
                      f"input and one output so far (an integer label beside a classifier's "
                      f"scores is fine). Serve it (deploykit serve) or load its "
                      f"artifacts with their runtimes directly")


def _fill(b: Bundle, device: str, chosen: list[Artifact], root: Path) -> dict[str, Any]:
    labels = b.labels
    outputs = [s.name for s in b.signature.outputs]
    main_output = b.signature.scores or outputs[-1]
    (root / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    arts = [_add_artifact(b, a, root, main_output) for a in chosen]
    packaged_fp32 = {a.runtime: e["bytes"] for a, e in zip(chosen, arts, strict=True)
                     if a.profile == "fp32"}
    for a, e in zip(chosen, arts, strict=True):  # sizes as packaged, metadata included
        if a.runtime in packaged_fp32:
            e["size_vs_fp32"] = round(e["bytes"] / packaged_fp32[a.runtime], 3)
    (root / "probe").mkdir()
    for key in ("inputs", "reference"):
        shutil.copy2(b.root / b.manifest["probe"][key], root / "probe" / f"{key}.npz")
    for f in RUNNERS[device]:
        shutil.copy2(targets.folder() / f, root / Path(f).name)
    probe, versions = {"inputs": "probe/inputs.npz", "reference": "probe/reference.npz"}, {}
    if device == "web":
        versions = web_page.add_page(b, {a.runtime for a in chosen}, root)
        probe["json"] = "probe/probe.json"
    files = {str(f.relative_to(root)): sha256(f)
             for f in sorted(p for p in root.rglob("*") if p.is_file())}
    return {
        "schema": SCHEMA, "for": device, "name": b.manifest["name"],
        "framework": b.manifest["source"]["framework"],
        "task": b.task, "labels": labels, "signature": b.manifest["signature"],
        "main_output": main_output, "profiles": profile_rules(),
        "preprocessing": {"where": "inside the model (raw features in)",
                          "input_image_shape": b.manifest.get("input_image_shape")},
        "probe": probe, "artifacts": arts, "sha256": files,
        "runtime_versions": {**_runtime_versions(chosen), **versions},
    }


def _add_artifact(b: Bundle, a: Artifact, root: Path, main_output: str) -> dict[str, Any]:
    shutil.copytree(b.root / a.folder, root / "models" / a.target)
    rel_path = "models/" + a.path.split("/", 1)[1]
    t = b.tradeoff(a)
    entry = {"target": a.target, "runtime": a.runtime, "profile": a.profile,
             "path": rel_path, "batch": a.batch, "size_vs_fp32": t["size_vs_fp32"],
             "metric": t["metric"], "metric_change": t["metric_change"],
             "label_agreement": a.parity.label_agreement}
    if a.runtime == "tflite":
        entry.update(_finish_tflite(b, root / rel_path, root / "labels.txt", main_output))
    entry["bytes"] = tree_size(root / "models" / a.target)
    return entry


def _runtime_versions(chosen: list[Artifact]) -> dict[str, str]:
    """From the bundle: the ExecuTorch that wrote the .pte (a phone needs a runtime of the
    same release) and the LiteRT that verified the .tflite files."""
    out = {}
    for a in chosen:
        if a.runtime == "executorch":
            out.update(a.converter_versions)
        out.update(a.verified_with)
    return {k: v for k, v in sorted(out.items()) if k in ("executorch", "ai-edge-litert")}


def _finish_tflite(b: Bundle, model: Path, labels: Path, main_output: str) -> dict[str, Any]:
    """Embed TFLite metadata (labels, normalization, input range) for Android's libraries,
    then say which older runtimes lack an op the model needs (before a device finds out)."""
    raw = model.read_bytes()
    try:
        model.write_bytes(_with_metadata(b, raw, labels, main_output))
        embedded = "TFLITE_METADATA (labels, normalization, input range)"
    except BundleError as e:  # the model is still usable; say why it carries no metadata
        embedded = f"none: {e}"
    if tflite_compat.operator_codes(model) != tflite_compat.operator_codes(raw):
        raise BundleError(f"adding metadata changed the operators of {model.name}; "
                          "please report this with the bundle")
    return {"metadata": embedded,
            "older_runtimes": {rt: tflite_compat.missing_ops(model, rt)
                               for rt in tflite_compat.RUNTIMES}}


def _with_metadata(b: Bundle, raw: bytes, labels: Path, main_output: str) -> bytes:
    x = next(iter(b.probe().inputs.values()))
    ins, outs = tflite_metadata.io_names(raw)
    sig = b.manifest["signature"]["inputs"][0]
    inputs = [tflite_metadata.TensorInfo(
        sig["name"] if len(ins) == 1 else n,
        f"raw features {sig['shape'][1:]}; normalization happens inside the model, so mean 0 "
        f"and std 1 here", (0.0,), (1.0,), (float(x.min()),), (float(x.max()),)) for n in ins]
    outputs = [tflite_metadata.TensorInfo(
        main_output if len(outs) == 1 else n, "model output",
        labels_file=labels.name if len(outs) == 1 or n == main_output else None) for n in outs]
    meta = tflite_metadata.build(b.name, f"{b.task} model made by deploykit",
                                 f"bundle of {b.manifest.get('created', '?')}", inputs, outputs)
    return tflite_metadata.embed(raw, meta, {labels.name: labels.read_bytes()})


def _zip(folder: Path, dest: Path) -> None:
    tmp = dest.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = fixed_zip_entry(f"{folder.name}/{f.relative_to(folder)}", zipfile.ZIP_DEFLATED)
            z.writestr(info, f.read_bytes())
    tmp.replace(dest)


def _row(a: dict[str, Any]) -> str:
    ratio = "" if a["size_vs_fp32"] is None else f"{a['size_vs_fp32']:.2f}x"
    change = "" if a["metric_change"] is None else f"{a['metric']} {a['metric_change']:+.4f}"
    batch = a["batch"] or "dynamic"
    old = "; ".join(f"{rt}: " + ("loads" if not lacks else "needs " + ", ".join(lacks))
                    for rt, lacks in a.get("older_runtimes", {}).items())
    return (f"| {a['target']} | `{a['path']}` | {human_bytes(a['bytes'])} | {ratio} | "
            f"{change} | {batch} | {old} |")


def _readme(meta: dict[str, Any]) -> str:
    rows = "\n".join(_row(a) for a in meta["artifacts"])
    sig = meta["signature"]["inputs"][0]
    return f"""# {meta['name']} for {meta['for']}

Made by deploykit from a verified bundle. Every file's sha256 is in `package.json`.

Input `{sig['name']}`: {sig['dtype']} {sig['shape']} (null = any batch), raw features —
preprocessing is {meta['preprocessing']['where']}. Output: `{meta['main_output']}`.
Labels, one per line in class order: `labels.txt`.
{_word_codes(sig)}
| target | file | size | size vs fp32 | task metric change (held-out) | batch | older runtimes |
|---|---|---|---|---|---|---|
{rows}

{_how_to(meta)}"""


def _word_codes(sig: dict[str, Any]) -> str:
    """For a model that takes words: every artifact here takes their codes; for one trained
    on gaps: every artifact takes their fill."""
    gaps = "".join(f"- `{f['name']}` (column {f['column']}): {f['value']:g}\n"
                   for f in sig.get("filled", ()))
    gaps = (f"\nA missing value in these columns goes into the artifacts as the training "
            f"data's median (`run.py --serve` takes null there):\n{gaps}") if gaps else ""
    return _codes(sig) + gaps


def _codes(sig: dict[str, Any]) -> str:
    words = [w for w in sig.get("words", ()) if w["words"]]
    if not words:
        return ""
    lines = "\n".join(f"- `{w['name']}` (column {w['column']}): " + ", ".join(
        f"{i} = {_word(word)}" for i, word in enumerate(w["words"][:12]))
        + (", …" if len(w["words"]) > 12 else "") for w in words)
    return (f"\nColumns of words go into the artifacts as codes (a word's position in its "
            f"column's words; `package.json` has them all, under `signature`); `run.py "
            f"--serve` takes the words (a number is a code, except where the words are "
            f"numbers), and rows of `{{column: value}}`:\n"
            f"{lines}\n")


def _word(word: str | None) -> str:
    return "(missing)" if word is None else '""' if word == "" else word


def _how_to(meta: dict[str, Any]) -> str:
    if meta["for"] == "edge":
        return """## Check it on the device

```
pip install numpy ai-edge-litert      # or: tflite-runtime, or onnxruntime
python run.py . --verify              # re-runs the probe set, prints parity
python run.py . --input x.npy         # predictions for the rows of x.npy
python run.py . --serve --port 8080   # POST /predict {"instances": [[...]]}
```

`--input` and `--serve` run the first artifact whose runtime is installed; `--target NAME`
picks one (say `--target tflite-int8`), `--verify --target NAME` checks only that one.
"""
    if meta["for"] == "web":
        return _web_notes(meta)
    return _phone_notes(meta)


def _web_notes(meta: dict[str, Any]) -> str:
    a = meta["artifacts"][0]
    n = meta["signature"]["inputs"][0]["shape"][1:]
    versions = ", ".join(f"{k} {v}" for k, v in meta["runtime_versions"].items())
    return f"""## In the browser

Everything the page needs is in this folder, and nothing is fetched from elsewhere: the
runtimes deploykit verified these artifacts with are in `runtime/` ({versions}).
Serve the folder over HTTP (browsers do not run modules from `file://`) and open it:

```
python serve.py --port 8080           # the standard library only; binds to 127.0.0.1
```

`index.html` runs the probe set through every artifact at batch 1 and 7 (its first 32 rows)
and all rows, shows parity against the original model's outputs, then predicts a row you
choose. Any static host serves the folder as well, when it sends `.mjs` as `text/javascript`
and `.wasm` as `application/wasm`.

From your own page, with the import map of `index.html`:

```
import {{ loadArtifact }} from './engines.mjs';
const read = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
const model = await loadArtifact('{a['runtime']}', '{a['path']}', read);
const out = await model.predict({{ [model.inputNames[0]]:
  {{ shape: [1, {', '.join(map(str, n))}], dtype: 'float32', data: Float32Array.from(row) }} }});
// out[name] = {{ shape, dtype, data }} for each of model.outputNames
```
"""


def _phone_notes(meta: dict[str, Any]) -> str:
    """Load steps and build-file lines for the formats this package holds, with the versions
    the bundle recorded (the ExecuTorch that wrote the .pte, the LiteRT that verified)."""
    n, x = meta["signature"]["inputs"][0]["shape"][1], meta["signature"]["inputs"][0]["name"]
    main = meta["main_output"]  # by name in LiteRT; by position in ExecuTorch, which has none
    at = [o["name"] for o in meta["signature"]["outputs"]].index(main)
    v = meta["runtime_versions"]
    runtimes = {a["runtime"] for a in meta["artifacts"]}
    gradle, kotlin, ios = [], [], []
    if "tflite" in runtimes:
        lite = v.get("ai-edge-litert", "VERSION")
        gradle.append(f'implementation("com.google.ai.edge.litert:litert:{lite}")  '
                      f'// verified with ai-edge-litert {lite}')
        kotlin += ['val tflite = Interpreter(File(filesDir, "model.tflite"))  '
                   '// org.tensorflow.lite.Interpreter',
                   f'val out = Array(1) {{ FloatArray(labels.size) }}; tflite.runSignature('
                   f'mapOf("{x}" to arrayOf(row)), mapOf("{main}" to out))']
        ios.append("LiteRT: CocoaPods `pod 'TensorFlowLiteSwift', '~> 2.17.0'` (newest pod seen "
                   "in public projects; not checked against the registry), "
                   "`Interpreter(modelPath:)`.")
    if "executorch" in runtimes:
        et = v.get("executorch", "VERSION")
        gradle.append(f'implementation("org.pytorch:executorch-android:{et}")  '
                      f'// the .pte was written by executorch {et}')
        kotlin += ['val pte = Module.load(File(filesDir, "model.pte").absolutePath)  '
                   '// org.pytorch.executorch',
                   f"val probs = pte.forward(EValue.from(Tensor.fromBlob(row, longArrayOf(1, {n}))))"
                   f"[{at}].toTensor().dataAsFloatArray  // {main}"]
        ios.append("ExecuTorch: Swift package `https://github.com/pytorch/executorch.git`, the "
                   f"`swiftpm-` release branch of the executorch {et} line (e.g. `swiftpm-"
                   f"{'.'.join(et.split('.')[:2])}.0`; check the branch exists), products "
                   "`executorch`, `backend_xnnpack`, `kernels_optimized`, linker flag "
                   f"`-all_load`; `Module(filePath:)`, `forward(Tensor<Float>(row, shape: [1, {n}]))`.")
    nl = "\n"
    return f"""## Load it in the app

Same steps as `python phone.py . --verify`, which re-runs the probe set on the phone
runtimes' Python builds; full notes: deploykit's `targets/mobile/README.md`. Feed one row
as float32 `[1, {n}]`; the top index of the output names the class in `labels.txt` (the
`.tflite` files also carry the labels and input normalization as TFLite metadata).

Android, `build.gradle.kts`:

```kotlin
{nl.join(gradle)}
```

```kotlin
{nl.join(kotlin)}
```

iOS:
{nl.join("- " + line for line in ios)}
"""
