#!/usr/bin/env node
'use strict';
// Register the bundled demo classifier, explain a face with occlusion, print what the map says.
//
//   faceaudit serve --port 50051 &
//   node examples/explain.js [HOST:PORT] [FACE.png]
//
// Without FACE.png a simple synthetic face (skin oval, eyes, mouth) is drawn here as raw pixels.
// FACEAUDIT_TOKEN, when set, is sent as the bearer token.

const path = require('node:path');
const { FaceAuditClient } = require('../src/client');

const MODEL = path.resolve(__dirname, '..', '..', '..', 'service', 'faceaudit', 'demo', 'models', 'identity.onnx');
// identity.spec.yaml, which sits next to the model: the fields its graph cannot reveal.
const SPEC = { kind: 'classifier', output: 'logits', output_type: 'logits', channel_order: 'RGB', scale: 1 / 255,
  mean: [0], std: [1], softmax: false };

function syntheticFace(size = 64) {
  const data = new Float32Array(size * size * 3);
  const inside = (x, y, cx, cy, rx, ry) => ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1;
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      let rgb = [90, 110, 140]; // background
      if (inside(x, y, 32, 34, 20, 26)) rgb = [224, 180, 150]; // skin
      if (inside(x, y, 24, 28, 4, 2.5) || inside(x, y, 40, 28, 4, 2.5)) rgb = [40, 30, 30]; // eyes
      if (inside(x, y, 32, 47, 8, 2)) rgb = [160, 60, 60]; // mouth
      data.set(rgb, 3 * (y * size + x));
    }
  }
  return { shape: [size, size, 3], data };
}

function stats({ shape, data }) {
  let min = Infinity; let max = -Infinity; let sum = 0; let argmax = 0;
  data.forEach((v, i) => {
    if (v < min) min = v;
    if (v > max) { max = v; argmax = i; }
    sum += v;
  });
  return { min, max, mean: sum / data.length, peak: { row: Math.floor(argmax / shape[1]), col: argmax % shape[1] } };
}

async function main(address = process.env.FACEAUDIT_ADDRESS || 'localhost:50051', face = null) {
  const client = new FaceAuditClient(address, { token: process.env.FACEAUDIT_TOKEN, timeoutMs: 120000 });
  try {
    const model = await client.registerModel(MODEL, { spec: SPEC });
    console.log(`registered ${model.name} (${model.kind}, ${model.height}x${model.width}, sha256 ${model.sha256.slice(0, 12)}…)`);
    const started = Date.now();
    let last = null;
    const [map] = await client.explain(
      { model: model.name, method: 'occlusion', images: [face || syntheticFace()], options: { patch: 8, stride: 4 } },
      { onProgress: (p) => { last = p; process.stderr.write(`\r${p.phase}: ${p.done}/${p.total}`); } },
    );
    process.stderr.write('\n');
    const s = stats(map.values);
    console.log(`method ${map.method}, class ${map.metadata.target.class_index}, map ${map.values.shape.join('x')}, `
      + `${map.forwardPasses} forward passes in ${(Date.now() - started) / 1000} s`);
    console.log(`values min ${s.min.toFixed(4)}, max ${s.max.toFixed(4)}, mean ${s.mean.toFixed(4)}; `
      + `most important pixel at row ${s.peak.row}, column ${s.peak.col}`);
    return { model, map, stats: s, lastProgress: last };
  } finally {
    client.close();
  }
}

module.exports = { main, syntheticFace, stats };

if (require.main === module) {
  main(process.argv[2], process.argv[3] || null).catch((error) => {
    console.error(`explain.js: ${error.message}`);
    process.exit(1);
  });
}
