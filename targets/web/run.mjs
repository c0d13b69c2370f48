// deploykit's Node runner for browser artifacts: TF.js graph models (@tensorflow/tfjs, pure JS
// CPU backend) and ONNX on onnxruntime-web (wasm) -- the same engines a browser runs.
//
//   node run.mjs BUNDLE TARGET INPUT.json OUTPUT.json   one shot: run the bundle's artifact
//   node run.mjs serve                                  JSON lines on stdin/stdout (a Python runner
//                                                       loads one artifact at a time into it)
//
// Tensors travel as {"shape": [...], "dtype": "float32"|"int32"|"int64", "data": base64 of the
// little-endian bytes}; INPUT.json is {"inputs": {name: tensor}}.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { loadArtifact } from './engines.mjs';

const TYPED = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array, bool: Uint8Array };

function decode(t) {
  const bytes = Buffer.from(t.data, 'base64');
  const Typed = TYPED[t.dtype || 'float32'];
  const copy = new Uint8Array(bytes); // aligned copy
  return { shape: t.shape, dtype: t.dtype || 'float32', data: new Typed(copy.buffer) };
}

function encode(t) {
  const buf = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return { shape: t.shape, dtype: t.dtype, data: buf.toString('base64') };
}

async function predict(model, inputs) {
  const decoded = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, decode(v)]));
  const out = await model.predict(decoded);
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, encode(v)]));
}

const readFile = async (p) => new Uint8Array(fs.readFileSync(p));

async function oneShot(bundle, target, inputFile, outputFile) {
  const manifest = JSON.parse(fs.readFileSync(path.join(bundle, 'manifest.json'), 'utf8'));
  const art = manifest.artifacts.find((a) => a.target === target);
  if (!art) throw new Error(`bundle has no '${target}' artifact`);
  const model = await loadArtifact(art.runtime, path.join(bundle, art.path), readFile);
  const { inputs } = JSON.parse(fs.readFileSync(inputFile, 'utf8'));
  fs.writeFileSync(outputFile, JSON.stringify({ outputs: await predict(model, inputs) }));
}

async function serve() {
  let model = null;
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let reply;
    try {
      const req = JSON.parse(line);
      if (req.op === 'load' || req.op === 'unload') {
        // one model at a time: the Python runners hand an idle process to the next artifact
        const old = model;
        model = null;
        if (old) await old.dispose();
        if (req.op === 'load') model = await loadArtifact(req.runtime, req.path, readFile);
        reply = model ? { ok: true, inputs: model.inputNames, outputs: model.outputNames } : { ok: true };
      } else if (req.op === 'predict') {
        if (!model) throw new Error('no model loaded');
        reply = { ok: true, outputs: await predict(model, req.inputs) };
      } else {
        throw new Error(`unknown op ${req.op}`);
      }
    } catch (e) {
      reply = { ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
}

const [cmd, ...rest] = process.argv.slice(2);
try {
  if (cmd === 'serve') await serve();
  else if (rest.length === 3) await oneShot(cmd, ...rest);
  else {
    console.error('usage: node run.mjs BUNDLE TARGET INPUT.json OUTPUT.json | node run.mjs serve');
    process.exit(2);
  }
} catch (e) {
  console.error(`error: ${e.message || e}`);
  process.exit(1);
}
