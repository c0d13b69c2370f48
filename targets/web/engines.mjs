// Loading and running one artifact: shared by the Node runner (run.mjs) and the browser page
// (page/app.js). Only how bytes are read differs: `readBytes(relativeOrAbsolutePath)` is the
// file system in Node and fetch() in the browser.

let tfModule = null;
let ortModule = null;

async function tf() {
  if (!tfModule) {
    tfModule = await import('@tensorflow/tfjs');
    await tfModule.setBackend('cpu');
  }
  return tfModule;
}

async function ort() {
  if (!ortModule) {
    ortModule = await import('onnxruntime-web');
    ortModule.env.wasm.numThreads = 1;
    if (globalThis.DEPLOYKIT_ORT_WASM) ortModule.env.wasm.wasmPaths = globalThis.DEPLOYKIT_ORT_WASM;
  }
  return ortModule;
}

// Parity of one artifact's outputs against the reference, by one of the rules the bundle's
// manifest carries ("profiles": written by deploykit from its own parity profiles).
export function compare(rule, got, ref) {
  const { atol, rtol, min_label_agreement: minAgree } = rule;
  const tie = rule.tie_margin || 0;
  let maxAbs = 0;
  let within = true;
  for (let i = 0; i < ref.data.length; i += 1) {
    const d = Math.abs(Number(got.data[i]) - Number(ref.data[i]));
    maxAbs = Math.max(maxAbs, d);
    if (atol !== null && d > atol + rtol * Math.abs(Number(ref.data[i]))) within = false;
  }
  let agree = null;
  if (ref.shape.length === 2 && ref.shape[1] > 1) {
    // rows the original cannot separate at the tie margin do not count (see parity.py)
    const [n, k] = ref.shape;
    let same = 0;
    let counted = 0;
    let sameAll = 0;
    for (let r = 0; r < n; r += 1) {
      const hit = argmax(got.data, r * k, k) === argmax(ref.data, r * k, k);
      sameAll += hit;
      if (margin(ref.data, r * k, k) < tie) continue;
      counted += 1;
      same += hit;
    }
    agree = counted ? same / counted : sameAll / n;
  }
  const sameShape = JSON.stringify(got.shape) === JSON.stringify(ref.shape);
  const pass = sameShape && within && (agree === null || minAgree === null || agree >= minAgree);
  return { maxAbs, agree, pass, sameShape };
}

function margin(data, from, k) {
  let first = -Infinity;
  let second = -Infinity;
  for (let i = from; i < from + k; i += 1) {
    const v = Number(data[i]);
    if (v > first) [first, second] = [v, first];
    else if (v > second) second = v;
  }
  return first - second;
}

function argmax(data, from, k) {
  let best = from;
  for (let i = from + 1; i < from + k; i += 1) if (data[i] > data[best]) best = i;
  return best - from;
}

function dirname(p) {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i + 1);
}

// A TF.js graph model: model.json plus its weight shards (paths relative to model.json).
async function loadTfjs(modelJson, readBytes) {
  const t = await tf();
  const dir = dirname(modelJson);
  const json = JSON.parse(new TextDecoder().decode(await readBytes(modelJson)));
  const specs = [];
  const buffers = [];
  for (const group of json.weightsManifest) {
    specs.push(...group.weights);
    for (const p of group.paths) {
      const b = await readBytes(dir + p);
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  }
  const handler = {
    load: async () => ({
      modelTopology: json.modelTopology,
      format: json.format,
      generatedBy: json.generatedBy,
      convertedBy: json.convertedBy,
      signature: json.signature,
      userDefinedMetadata: json.userDefinedMetadata,
      weightSpecs: specs,
      weightData: concat(buffers),
    }),
  };
  const model = await t.loadGraphModel(handler);
  const inputNames = model.inputs.map((i) => i.name);
  const outputNames = model.outputs.map((o) => o.name);
  return {
    inputNames,
    outputNames,
    dispose: () => model.dispose(),
    async predict(inputs) {
      const feed = {};
      for (const [k, v] of Object.entries(inputs)) {
        // TF.js has no int64: ids arrive as int32, as the TF.js converter narrows them too
        const int64 = v.dtype === 'int64';
        feed[k] = t.tensor(int64 ? Int32Array.from(v.data, Number) : v.data, v.shape,
          int64 ? 'int32' : v.dtype);
      }
      try {
        const result = await model.executeAsync(feed, outputNames);
        const list = Array.isArray(result) ? result : [result];
        const out = {};
        for (let i = 0; i < list.length; i += 1) {
          out[outputNames[i]] = { shape: list[i].shape, dtype: list[i].dtype, data: await list[i].data() };
          list[i].dispose();
        }
        return out;
      } finally {
        Object.values(feed).forEach((x) => x.dispose());
      }
    },
  };
}

function concat(buffers) {
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const b of buffers) {
    out.set(new Uint8Array(b), at);
    at += b.byteLength;
  }
  return out.buffer;
}

// An ONNX model on onnxruntime-web's wasm backend.
async function loadOnnx(file, readBytes) {
  const o = await ort();
  const session = await o.InferenceSession.create(new Uint8Array(await readBytes(file)));
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    dispose: () => session.release(),
    async predict(inputs) {
      const feed = {};
      for (const [k, v] of Object.entries(inputs)) feed[k] = new o.Tensor(v.dtype, v.data, v.shape);
      const result = await session.run(feed);
      const out = {};
      for (const name of session.outputNames) {
        const t = result[name];
        out[name] = { shape: t.dims, dtype: t.type, data: t.data };
      }
      return out;
    },
  };
}

export async function loadArtifact(runtime, file, readBytes) {
  if (runtime === 'tfjs') return loadTfjs(file, readBytes);
  if (runtime === 'onnx-web') return loadOnnx(file, readBytes);
  throw new Error(`unknown runtime '${runtime}' (tfjs, onnx-web)`);
}
