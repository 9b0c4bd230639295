'use strict';
// The Node client against a real running faceaudit server: every RPC the demo models allow.

const assert = require('node:assert/strict');
const path = require('node:path');
const { after, before, test } = require('node:test');

const { FaceAuditClient, FaceAuditError, status, arrayToTensor, tensorToArray } = require('../src/client');
const example = require('../examples/explain');
const { startServer, DEMO_MODELS } = require('./server');

let server;
let client;

before(async () => {
  server = await startServer();
  client = new FaceAuditClient(server.address, { timeoutMs: 60000 });
});

after(async () => {
  if (client) client.close();
  if (server) await server.stop();
});

const face = example.syntheticFace(64);
const SPEC = { kind: 'classifier', output: 'logits', output_type: 'logits' };

test('ListMethods names the methods with their options', async () => {
  const methods = Object.fromEntries((await client.listMethods()).map((m) => [m.name, m]));
  assert.ok(methods.occlusion.black_box);
  assert.ok(methods.occlusion.options.some((o) => o.name === 'patch'));
  assert.equal(methods.gradient.black_box, false);
});

test('Register uploads the model in chunks; List and Get see it', async () => {
  const info = await client.registerModel(path.join(DEMO_MODELS, 'identity.onnx'), { name: 'chunked', spec: SPEC, chunkBytes: 8192 });
  assert.equal(info.name, 'chunked');
  assert.equal(info.kind, 'classifier');
  assert.deepEqual([info.height, info.width, info.output_size], [64, 64, 20]);
  assert.match(info.sha256, /^[0-9a-f]{64}$/);
  assert.equal(typeof info.details, 'object');
  assert.deepEqual((await client.getModel(info.sha256)).name, 'chunked');
  assert.ok((await client.listModels()).some((m) => m.name === 'chunked'));
});

test('Explain: occlusion map of the right shape; a hand-computed count of forward passes', async () => {
  const [map] = await client.explain({ model: 'chunked', method: 'occlusion', images: [face], targets: [3],
    options: { patch: 16, stride: 8 } });
  assert.deepEqual(map.values.shape, [64, 64]);
  assert.equal(map.values.data.length, 64 * 64);
  assert.equal(map.forwardPasses, 7 * 7 + 1); // (64 - 16) / 8 + 1 windows per side, plus the unoccluded face
  assert.deepEqual(map.metadata.target, { class_index: 3 });
  assert.equal(map.metadata.options.patch, 16);
  assert.equal(map.targetIndex, 0);
  assert.ok(map.values.data.some((v) => v !== 0));
});

test('ExplainStream: progress events up to every forward pass, then the same map as Explain', async () => {
  const progress = [];
  const request = { model: 'chunked', method: 'occlusion', images: [face], targets: [1], options: { patch: 8, stride: 4 } };
  const [streamed] = await client.explain(request, { onProgress: (p) => progress.push(p) });
  const [unary] = await client.explain(request);
  assert.ok(progress.length > 0);
  const last = progress[progress.length - 1];
  assert.equal(last.done, last.total);
  assert.equal(last.total, streamed.forwardPasses);
  assert.deepEqual(progress.map((p) => p.done), [...progress.map((p) => p.done)].sort((a, b) => a - b));
  assert.deepEqual(streamed.values, unary.values); // the same computation, bit for bit
});

test('Explain several images × targets comes back image-major', async () => {
  const maps = await client.explain({ model: 'chunked', method: 'gradient', images: [face, face], targets: [0, 7] });
  assert.deepEqual(maps.map((m) => [m.imageIndex, m.targetIndex]), [[0, 0], [0, 1], [1, 0], [1, 1]]);
  assert.deepEqual(maps[0].values, maps[2].values); // the same face and class: the same map
});

test('cis with landmarks in the image\'s pixels; landmarks on another method are refused', async () => {
  const points = [[22.0, 25.0], [42.0, 25.0], [32.0, 36.0], [24.0, 47.0], [40.0, 47.0]]; // ArcFace's order
  const request = { model: 'chunked', method: 'cis', targets: [3], options: { patch: 16, stride: 8 } };
  const [aligned] = await client.explain({ ...request, images: [{ image: face, landmarks: points }] });
  const [crop] = await client.explain({ ...request, images: [face] });
  assert.equal(aligned.frame, 'canonical');
  assert.deepEqual(aligned.values.shape, [64, 64]);
  assert.notDeepEqual(aligned.values.data, crop.values.data); // the landmarks moved the face onto the template
  const [typed] = await client.explain({ ...request, images: [{ image: face, landmarks: Float64Array.from(points.flat()) }] });
  assert.deepEqual(typed.values, aligned.values); // a flat typed array is the same landmarks
  await assert.rejects(client.explain({ model: 'chunked', method: 'occlusion', targets: [3],
    images: [{ image: face, landmarks: points }] }), (error) => {
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.field, 'images[0].landmarks');
    return true;
  });
});

test('an unknown method is INVALID_ARGUMENT naming the field; the server keeps serving', async () => {
  await assert.rejects(client.explain({ model: 'chunked', method: 'no-such-method', images: [face] }), (error) => {
    assert.ok(error instanceof FaceAuditError);
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.codeName, 'INVALID_ARGUMENT');
    assert.equal(error.field, 'method');
    return true;
  });
  await assert.rejects(client.getModel('never-registered'), (error) => error.code === status.NOT_FOUND);
  const streamed = client.explain({ model: 'never-registered', method: 'gradient', images: [face] }, { onProgress: () => {} });
  await assert.rejects(streamed, (error) => error.code === status.NOT_FOUND); // streaming calls reject too
  assert.ok((await client.listModels()).length >= 1);
});

test('a throwing progress callback cancels the stream and rejects with its error', async () => {
  const request = { model: 'chunked', method: 'occlusion', images: [face], targets: [0], options: { patch: 4, stride: 1 } };
  await assert.rejects(client.explain(request, { onProgress: () => { throw new Error('stop'); } }), /stop/);
});

test('RegisterFromRepository, Evaluate streaming points, then Unregister', async () => {
  const info = await client.registerFromRepository('identity');
  assert.equal(info.name, 'identity');
  const inside = new Float32Array(64 * 64);
  inside[30 * 64 + 32] = 1; // one hot pixel inside the region below
  const region = new Float32Array(64 * 64);
  for (let y = 20; y < 40; y += 1) for (let x = 20; x < 44; x += 1) region[y * 64 + x] = 1;
  const points = [];
  const result = await client.evaluate({
    model: 'identity', game: 'pointing_game', options: { tolerance_px: 0 },
    items: [{ image: face, target: 2, maps: { hot: { shape: [64, 64], data: inside } }, region: { shape: [64, 64], data: region } }],
  }, { onPoint: (p) => points.push(p) });
  assert.equal(result.game, 'pointing_game');
  assert.equal(result.summary.hot.hit_rate, 1);
  const removed = await client.unregisterModel('identity');
  assert.equal(removed.sha256, info.sha256);
  await assert.rejects(client.getModel('identity'), (error) => error.code === status.NOT_FOUND);
});

test('Evaluate deletion streams every curve point as it is computed', async () => {
  const points = [];
  const map = new Float32Array(64 * 64).map((_, i) => i % 64); // brightest on the right
  const result = await client.evaluate({
    model: 'chunked', game: 'deletion', options: { steps: 4 },
    items: [{ image: face, target: 2, maps: { ramp: { shape: [64, 64], data: map } } }],
  }, { onPoint: (p) => points.push(p) });
  const ramp = points.filter((p) => p.series === 'ramp');
  assert.deepEqual(ramp.map((p) => p.index), ramp.map((_, i) => i));
  assert.ok(ramp.length >= 2);
  assert.ok(result.curves && result.summary.ramp);
});

test('Evaluate correspondence sends part masks; the server plays the parts in name order', async () => {
  const box = (top, left, h, w, size = 64) => {
    const data = new Float32Array(size * size);
    for (let y = top; y < top + h; y += 1) for (let x = left; x < left + w; x += 1) data[y * size + x] = 1;
    return { shape: [size, size], data };
  };
  const dim = { shape: face.shape, data: face.data.map((v) => 0.6 * v) }; // a second face
  const eyes = [box(25, 19, 6, 26), box(25, 19, 6, 26)]; // syntheticFace's eyes and mouth
  const mouth = [box(45, 24, 5, 16), box(45, 24, 5, 16)];
  const request = { model: 'chunked', game: 'correspondence', images: [face, dim], options: { random_trials: 1 },
    parts: { mouth, eyes } };
  const points = [];
  const result = await client.evaluate(request, { onPoint: (p) => points.push(p) });
  assert.deepEqual(points.filter((p) => p.index === 0).map((p) => p.series), ['eyes', 'mouth', 'random']);
  assert.equal(result.forward_passes, 2 * (1 + 2 * (1 + 1))); // images × (1 + parts × (1 + random_trials))
  assert.ok(Object.values(result.curves).every((c) => c.delta.every((d) => d >= 0 && d <= 1)));
  const reordered = await client.evaluate({ ...request, parts: { eyes, mouth } });
  assert.deepEqual(reordered.curves, result.curves); // the random baseline's draws do not follow the object's order
  await assert.rejects(client.evaluate({ ...request, parts: { eyes: [eyes[0], box(0, 0, 4, 4, 32)] } }), (error) => {
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.field, 'parts[eyes][1]');
    return true;
  });
  await assert.rejects(client.evaluate({ ...request, parts: [eyes] }), (error) => error.field === 'parts');
});

test('tensors round-trip as little-endian float32', () => {
  const values = { shape: [2, 3], data: Float32Array.from([0, 0.25, -1.5, 3, 1e-3, 255]) };
  const tensor = arrayToTensor(values);
  assert.equal(tensor.data.readFloatLE(8), -1.5); // hand-checked: the third value at byte 8
  assert.deepEqual(tensorToArray(tensor), values);
  const half = { dtype: 'FLOAT16', shape: [2], data: Buffer.from([0x00, 0x3c, 0x00, 0xc0]) }; // 1.0 and -2.0
  assert.deepEqual(Array.from(tensorToArray(half).data), [1, -2]);
});

test('the example runs against the server and reports a map', async () => {
  const quiet = process.stderr.write;
  process.stderr.write = () => true;
  const log = console.log;
  const lines = [];
  console.log = (line) => lines.push(line);
  let outcome;
  try {
    outcome = await example.main(server.address);
  } finally {
    process.stderr.write = quiet;
    console.log = log;
  }
  assert.equal(outcome.map.forwardPasses, 15 * 15 + 1); // patch 8, stride 4 on 64 px
  assert.ok(outcome.stats.max > outcome.stats.min);
  assert.match(lines.join('\n'), /most important pixel at row \d+, column \d+/);
});
