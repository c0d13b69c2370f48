// Loads a deploykit bundle's browser artifacts (tfjs, onnx-web), runs the bundle's probe set
// at batch 1 and an odd size (its first SMALL_BATCH_ROWS rows, as deploykit's parity does)
// and the full set, and shows parity against the reference outputs.
// What it checks: the bundle served under ?bundle=URL (default /bundle/), or, on a page
// marked <html data-package>, the web package it ships in (deploykit package --for web,
// whose package.json lists the same facts). The page's import map says where the runtimes
// and engines.mjs are. Results land in window.deploykitResults and window.deploykitDone for
// automated checks.
import { compare, loadArtifact } from 'deploykit-engines';

// onnxruntime-web fetches its wasm from beside its own module (a web package without an
// onnx-web artifact has no onnxruntime-web in its import map)
try {
  globalThis.DEPLOYKIT_ORT_WASM = new URL('.', import.meta.resolve('onnxruntime-web')).href;
} catch { /* nothing to point at */ }
const readBytes = async (p) => {
  const r = await fetch(p);
  if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};
const TYPED = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array, bool: Uint8Array };
const decode = (t) => {
  const bytes = Uint8Array.from(atob(t.data), (c) => c.charCodeAt(0));
  return { shape: t.shape, dtype: t.dtype, data: new TYPED[t.dtype](bytes.buffer) };
};
const rows = (t, from, to) => {
  const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return { shape: [to - from, ...t.shape.slice(1)], dtype: t.dtype,
           data: t.data.slice(from * width, to * width) };
};
const concatRows = (parts) => {
  const n = parts.reduce((a, p) => a + p.shape[0], 0);
  const data = new parts[0].data.constructor(parts.reduce((a, p) => a + p.data.length, 0));
  let at = 0;
  for (const p of parts) { data.set(p.data, at); at += p.data.length; }
  return { shape: [n, ...parts[0].shape.slice(1)], dtype: parts[0].dtype, data };
};

// The output a page reads: the classifier's scores by name (the signature's `scores`, a
// package's `main_output`), else the model's last output (a label comes before its scores).
const readOutput = (model, scores) =>
  (model.outputNames.includes(scores) ? scores : model.outputNames[model.outputNames.length - 1]);

// Rows run at batch 1 and at the odd batch (the full set runs every row): as
// deploykit.parity.SMALL_BATCH_ROWS, so the page's numbers are the manifest's.
const SMALL_BATCH_ROWS = 32;

// In chunks of `batch` rows; a fixed-batch artifact gets its last chunk padded with copies
// of the last row, and the padding's outputs are dropped.
async function runBatched(model, inputName, x, batch, fixed, scores) {
  const parts = [];
  for (let i = 0; i < x.shape[0]; i += batch) {
    let chunk = rows(x, i, Math.min(i + batch, x.shape[0]));
    const n = chunk.shape[0];
    if (fixed && n < batch) {
      chunk = concatRows([chunk, ...Array(batch - n).fill(rows(chunk, n - 1, n))]);
    }
    const out = await model.predict({ [inputName]: chunk });
    parts.push(rows(out[readOutput(model, scores)], 0, n));
  }
  return concatRows(parts);
}

let readChecked = readBytes;  // a web package's files: each against its sha256, once read
const readJson = async (p) => JSON.parse(new TextDecoder().decode(await readChecked(p)));
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

// readBytes, refusing a file package.json does not list or whose sha256 differs (a damaged
// copy passed, its outputs a little off). crypto.subtle needs a secure context: https, or
// the package's serve.py on 127.0.0.1.
function checkedAgainst(hashes) {
  return async (p) => {
    const bytes = await readBytes(p);
    const want = hashes[p];
    if (want === undefined) throw new Error(`${p} is not listed in package.json`);
    if (!globalThis.crypto?.subtle) {
      throw new Error('checking the files needs https or localhost (crypto.subtle)');
    }
    if (hex(await crypto.subtle.digest('SHA-256', bytes)) !== want) {
      throw new Error(`${p} does not match its sha256; the package is damaged -- copy it again`);
    }
    return bytes;
  };
}

// The facts the page needs, from a bundle's manifest.json or a web package's package.json.
async function source() {
  if ('package' in document.documentElement.dataset) {
    const meta = await readJson('package.json');
    readChecked = checkedAgainst(meta.sha256);
    return { base: '', name: meta.name, framework: meta.framework,
             task: { kind: meta.task, labels: meta.labels },
             profiles: meta.profiles, artifacts: meta.artifacts, probe: meta.probe.json,
             imageShape: meta.preprocessing.input_image_shape, scores: meta.main_output };
  }
  const base = new URLSearchParams(location.search).get('bundle') || '/bundle/';
  const m = await readJson(base + 'manifest.json');
  return { base, name: m.name, framework: m.source.framework, task: m.task,
           profiles: m.profiles, artifacts: m.artifacts.filter((a) => a.runs === 'browser'),
           probe: m.probe.json, imageShape: m.input_image_shape, scores: m.signature.scores };
}

function mainOutput(reference, scores) {
  return (scores && reference[scores]) || reference.probabilities || reference.predictions ||
    Object.values(reference)[0];
}

async function main() {
  const status = document.getElementById('status');
  const manifest = await source();
  const base = manifest.base;
  const probe = await readJson(base + manifest.probe);
  const x = decode(Object.values(probe.inputs)[0]);
  const ref = decode(mainOutput(probe.reference, manifest.scores));
  document.getElementById('meta').textContent =
    `${manifest.name}: ${manifest.framework}, ${manifest.task.kind}, ${x.shape[0]} probe rows`;
  const n = x.shape[0];
  const sizes = [...new Set([1, Math.min(7, n) % 2 ? Math.min(7, n) : Math.max(1, Math.min(7, n) - 1), n])];
  const results = [];
  const models = {};
  for (const art of manifest.artifacts) {
    status.textContent = `running ${art.target}…`;
    const res = { target: art.target, runtime: art.runtime, profile: art.profile, batches: {} };
    try {
      const model = await loadArtifact(art.runtime, base + art.path, readChecked);
      models[art.target] = model;
      const inputName = model.inputNames[0];
      let pass = true;
      for (const b of (art.batch ? [art.batch] : sizes)) {
        const k = b === n || art.batch ? n : Math.min(n, SMALL_BATCH_ROWS);
        const got = await runBatched(model, inputName, rows(x, 0, k), b, Boolean(art.batch),
                                     manifest.scores);
        // label agreement is judged on the whole set, as deploykit's parity does: on 32
        // rows a 99 % threshold would refuse one flipped near-tie the whole set allows
        const rule = manifest.profiles[art.profile];
        const c = compare(k < n ? { ...rule, min_label_agreement: null } : rule, got,
                          rows(ref, 0, k));
        res.batches[b] = c.pass ? 'ok' : 'mismatch';
        pass = pass && c.pass;
        if (b === n || art.batch) { res.maxAbs = c.maxAbs; res.labelAgreement = c.agree; }
      }
      res.pass = pass;
    } catch (e) {
      res.pass = false;
      res.error = String(e.message || e);
    }
    results.push(res);
    render(res);
  }
  window.deploykitResults = results;
  setupTry(manifest, x, models);
  status.textContent = results.length
    ? `done: ${results.filter((r) => r.pass).length}/${results.length} browser artifacts pass`
    : 'this bundle has no tfjs or onnx-web artifacts';
  window.deploykitDone = true;
}

function render(r) {
  const tr = document.createElement('tr');
  const cells = [r.target, r.runtime, r.profile, JSON.stringify(r.batches),
    r.maxAbs === undefined ? '' : r.maxAbs.toExponential(2),
    r.labelAgreement == null ? '' : `${(100 * r.labelAgreement).toFixed(1)} %`,
    r.pass ? 'PASS' : `FAIL ${r.error || ''}`];
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c;
    tr.appendChild(td);
  }
  tr.lastChild.className = r.pass ? 'pass' : 'fail';
  document.querySelector('#results tbody').appendChild(tr);
}

function setupTry(manifest, x, models) {
  const width = x.shape[1];
  const img = manifest.imageShape;
  const draw = (i) => {
    if (!img) return;
    const ctx = document.getElementById('digit').getContext('2d');
    const row = x.data.slice(i * width, (i + 1) * width);
    const max = Math.max(...row, 1e-9);
    for (let p = 0; p < img[0] * img[1]; p += 1) {
      const v = 255 - Math.round(255 * row[p] / max);
      ctx.fillStyle = `rgb(${v},${v},${v})`;
      ctx.fillRect(p % img[1], Math.floor(p / img[1]), 1, 1);
    }
  };
  const predict = async () => {
    const i = Math.max(0, Math.min(x.shape[0] - 1, Number(document.getElementById('row').value)));
    draw(i);
    const lines = [];
    for (const [target, model] of Object.entries(models)) {
      const out = await model.predict({ [model.inputNames[0]]: rows(x, i, i + 1) });
      const y = out[readOutput(model, manifest.scores)].data;
      let best = 0;
      for (let k = 1; k < y.length; k += 1) if (y[k] > y[best]) best = k;
      const label = manifest.task.labels[best] ?? best;
      lines.push(`${target}: ${manifest.task.kind === 'classification' ? `class ${label} (${(100 * y[best]).toFixed(1)} %)` : Number(y[0]).toFixed(3)}`);
    }
    document.getElementById('answers').textContent = lines.join('  ·  ');
  };
  document.getElementById('run').onclick = predict;
  if (Object.keys(models).length) predict();
}

main().catch((e) => {
  document.getElementById('status').textContent = `error: ${e.message || e}`;
  window.deploykitError = String(e);
  window.deploykitDone = true;
});
