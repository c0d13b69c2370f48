"""The page at ``/``: models, artifacts with parity, size and latency, and a form to try an
input on every served artifact (and, when the bundle has them, on its tfjs / onnx-web
artifacts in the browser, through targets/web)."""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from deploykit.graph import BROWSER
from deploykit.signature import format_shape


def _rows(m) -> str:
    """One row per target the bundle tried: its verdict, figures and evidence (the same
    cell as the bundle's report), and where it is served."""
    from deploykit.report import artifact_cell, failure_cell
    from deploykit.report.page import cell_html

    made = {a.target for a in m.bundle.artifacts}
    out = []
    for a in m.bundle.artifacts:
        served = "server" if a.target in m.served else (a.runs if a.runs == BROWSER else "-")
        out.append(_row(a.target, a.runtime, served,
                        cell_html(m.name, artifact_cell(a))))
    for f in m.bundle.failed:
        if f.target not in made:
            out.append(_row(f.target, "", "-", cell_html(m.name, failure_cell(f))))
    return "\n".join(out)


def _row(target: str, runtime: str, served: str, cell: str) -> str:
    return (f"<tr><td>{html.escape(target)}</td><td>{html.escape(runtime)}</td>"
            f"<td>{html.escape(served)}</td>{cell}</tr>")


def _example(m) -> str:
    """The first probe row as a /predict body: a row of ``{feature: value}`` (words as
    words, missing values as null) for a model fitted on a DataFrame."""
    row = m.bundle.probe().rows(slice(0, 1))
    spec = m.signature.inputs[0]
    if len(row) > 1:
        return json.dumps({"inputs": {k: v.tolist() for k, v in row.items()}})
    if not spec.columns:
        return json.dumps({"instances": row[spec.name].tolist()})
    words = {w.column: w for w in spec.words}
    values = [_shown(words[j], v) if j in words else None if v != v else v
              for j, v in enumerate(row[spec.name][0].tolist())]
    return json.dumps({"instances": [dict(zip(spec.columns, values, strict=True))]})


def _shown(column, code: float) -> Any:
    """A code as a request says it: its word, null for a missing value, the code itself for
    an unknown word (null would be a missing value)."""
    word = column.word(code)
    missing = code != code or column.missing is not None and code == column.missing
    return word if word is not None or missing else code


def render(models: dict[str, Any]) -> str:
    sections = []
    for name, m in models.items():
        web = [a for a in m.bundle.artifacts if a.runs == BROWSER and a.passed
               and len(m.signature.inputs) == 1]  # the page's browser run feeds one input
        example = _example(m)
        sections.append(f"""
<section data-model="{html.escape(name)}" data-web='{html.escape(json.dumps(
            [{"target": a.target, "runtime": a.runtime, "path": a.path} for a in web]))}'>
<h2>{html.escape(name)}</h2>
<p>{html.escape(m.task)}, input {html.escape(", ".join(
            f"{s.name} {format_shape(s.shape)}" for s in m.signature.inputs))},
default target <b>{html.escape(m.default)}</b> ·
<a href="/report/{html.escape(quote(name, safe=''))}">report</a>
(matrix, size against latency, fp16 / int8)</p>
<table><tr><th>target</th><th>runtime</th><th>runs in</th>
<th>parity, size, batch-1 (open for the evidence)</th></tr>{_rows(m)}</table>
<textarea rows="3" cols="100">{html.escape(example)}</textarea><br>
<button>predict on every artifact</button>
<pre class="answers"></pre></section>""")
    from deploykit.report.page import CELL_CSS
    from deploykit.words import GAP_MARKERS

    return PAGE.replace("{{sections}}", "\n".join(sections)).replace(
        "{{cell_css}}", CELL_CSS).replace("{{gaps}}", json.dumps(sorted(GAP_MARKERS)))


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>deploykit serve</title>
<script type="importmap">{"imports": {
 "@tensorflow/tfjs": "/web/node_modules/@tensorflow/tfjs/dist/tf.fesm.min.js",
 "onnxruntime-web": "/web/node_modules/onnxruntime-web/dist/ort.min.mjs"}}</script>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}{{cell_css}}
.cell summary span{display:inline;margin-left:.8em}</style></head>
<body>
<h1>deploykit serve</h1><p><a href="/openapi.json">OpenAPI</a> ·
<a href="/metadata">metadata</a> · POST /validate re-checks parity live</p>
{{sections}}
<script type="module">
globalThis.DEPLOYKIT_ORT_WASM = '/web/node_modules/onnxruntime-web/dist/';
const readBytes = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
// rows of {feature: value} in the input's column order and each cell as the server takes
// it (a browser artifact takes numbers): a word as its code (by value, where the words are
// numbers; spaces around it dropped), null as the column's fill or missing code, else NaN;
// an unknown word, or a missing value the model does not take, throws (the server's 400)
const NUMBER = /^\\s*[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?\\s*$/;  // as Python's float()
const isNumber = (k) => typeof k === 'string' && NUMBER.test(k);
const GAPS = new Set({{gaps}});  // a gap in a column of numbers (deploykit.words.GAP_MARKERS)
const coded = (rows, spec) => {
  const words = Object.fromEntries((spec.words || []).map(w => [w.column, w]));
  const fills = Object.fromEntries((spec.filled || []).map(f => [f.column, f.value]));
  const named = (r) => {
    const row = Object.fromEntries(Object.entries(r).map(
      ([k, v]) => [spec.columns.includes(k) ? k : k.trim(), v]));
    const missing = spec.columns.filter(c => !(c in row));
    if (missing.length || Object.keys(row).length !== spec.columns.length)
      throw new Error(`features do not match the model's: missing ${missing}`);
    return spec.columns.map(c => row[c]);
  };
  const nan = (c) => c === 'nan' ? NaN : c;
  const word = (v, w) => {
    if (v === null || v === undefined) {
      if (w.missing == null) throw new Error(`column '${w.name}': a missing value`);
      return nan(w.missing);
    }
    if (typeof v === 'boolean')  // a column of true/false words
      v = [String(v), String(v).toLowerCase(), String(v).toUpperCase()].find(
        s => w.words.includes(s)) ?? v;
    const numbers = w.words.some(isNumber);
    if (typeof v === 'number' && !numbers) {  // a code, checked as the server does
      if ((Number.isInteger(v) && v >= 0 && v < w.words.length) || v === w.unknown ||
          v === w.missing) return v;
      throw new Error(`column '${w.name}': ${v} is no code`);
    }
    let i = typeof v === 'string' ? w.words.indexOf(v) : -1;
    if (i < 0 && typeof v === 'string') i = w.words.indexOf(v.trim());
    if (i < 0 && numbers && (typeof v === 'number' || isNumber(v)))
      i = w.words.findIndex(k => isNumber(k) && Number(k) === Number(v));
    if (i >= 0) return i;
    if (w.unknown != null) return nan(w.unknown);
    throw new Error(`column '${w.name}': unknown word '${v}'`);
  };
  const code = (v, j) => {
    const w = words[j];
    if (w) return w.words.length ? word(v, w) : 0;  // no words: a column the model drops
    if (typeof v === 'string' && !isNumber(v)) {
      if (!GAPS.has(v.trim().toLowerCase())) throw new Error(`column ${j} takes numbers`);
      v = null;  // a gap marker
    } else if (typeof v === 'string') v = Number(v);
    if (v === null || v === undefined) {
      if (j in fills) return fills[j];  // a gap takes the training data's median
      if (!spec.missing) throw new Error(`column ${j}: a missing value`);
      return NaN;
    }
    return typeof v === 'boolean' ? Number(v) : v;
  };
  return rows.map(r => (Array.isArray(r) ? r : named(r)).map(code));
};
for (const sec of document.querySelectorAll('section')) {
  const model = sec.dataset.model, web = JSON.parse(sec.dataset.web);
  const q = encodeURIComponent(model);
  sec.querySelector('button').onclick = async () => {
    const out = sec.querySelector('.answers');
    const body = sec.querySelector('textarea').value;
    const lines = [];
    const meta = await (await fetch('/metadata')).json();
    for (const t of meta[model].served) {
      const r = await fetch(`/predict?model=${q}&target=${encodeURIComponent(t)}`, {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body});
      const j = await r.json();
      lines.push(`server ${t}: ${JSON.stringify(j.labels || j.predictions || j.error)}`);
    }
    let rows = [];
    try {
      rows = web.length ? coded(JSON.parse(body).instances, meta[model].signature.inputs[0]) : [];
    } catch (e) {
      lines.push(`browser: ${e.message}`);
    }
    if (rows.length) {
      const {loadArtifact} = await import('/web/engines.mjs');
      for (const a of web) {
        const m = await loadArtifact(a.runtime, `/bundles/${q}/${a.path}`, readBytes);
        const x = {shape: [rows.length, rows[0].length], dtype: 'float32',
                   data: Float32Array.from(rows.flat())};
        const res = await m.predict({[m.inputNames[0]]: x});
        const y = res[m.outputNames[m.outputNames.length - 1]];
        const k = y.shape[1] || 1, labels = [], task = meta[model].task;
        for (let i = 0; i < y.shape[0]; i++) {
          if (task.kind !== 'classification') {  // a regression's values, as the server's
            labels.push(Array.from(y.data.slice(i*k, i*k+k))); continue;
          }
          let b = k === 1 ? Number(y.data[i] >= 0.5) : 0;  // one column: a sigmoid
          for (let j = 1; j < k; j++) if (y.data[i*k+j] > y.data[i*k+b]) b = j;
          labels.push(meta[model].task.labels[b] ?? b);
        }
        lines.push(`browser ${a.target}: ${JSON.stringify(labels)}`);
      }
    }
    out.textContent = lines.join('\\n');
  };
}
</script></body></html>"""
