'use strict';
// Landmarks of an image for cis: the shapes the client takes, and the field it names for the others
// (no server needed: image() builds the request message).

const assert = require('node:assert/strict');
const { test } = require('node:test');

const { image, target } = require('../src/client');

const PIXELS = { shape: [1, 1, 3], data: new Float32Array(3) };
const FLAT = [22, 25, 42, 25, 32, 36, 24, 47, 40, 47];
const PAIRS = [[22, 25], [42, 25], [32, 36], [24, 47], [40, 47]];

test('pairs, typed pairs, a flat Array and any typed array give the same flat x, y list', () => {
  for (const landmarks of [PAIRS, PAIRS.map((p) => Float32Array.from(p)), FLAT, Float64Array.from(FLAT),
    Float32Array.from(FLAT), Int16Array.from(FLAT), Uint8Array.from(FLAT)]) {
    const message = image({ image: PIXELS, landmarks }, 'images[0]');
    assert.deepEqual(message.landmarks, FLAT, `${landmarks.constructor.name}`);
    assert.ok(message.pixels); // the image itself is unchanged
  }
  assert.deepEqual(image({ image: PIXELS, landmarks: Float64Array.of(0.25, -0.5) }).landmarks, [0.25, -0.5]);
  assert.equal(image({ image: PIXELS }).landmarks, undefined); // no landmarks: an aligned crop
});

test('other shapes are refused with a TypeError naming the field', () => {
  const cases = [
    [Float64Array.of(1, 2, 3), /3 numbers do not make \(x, y\) pairs/],
    [[1, 2, 3], /3 numbers/],
    [[[1, 2], [3, 4, 5]], /point 1 is 3 values, not an \(x, y\) pair/],
    [[[1, 2], 3, 4], /point 1 is a number/],
    [[[[1, 2]], [[3, 4]]], /point 0 is 1 values/],
    [[[1, 'a']], /value 1 \(a\) is not a finite number/],
    [[1, NaN], /value 1 \(NaN\) is not a finite number/],
    [BigInt64Array.of(1n, 2n), /value 0 \(1\) is not a finite number/],
    [new DataView(new ArrayBuffer(16)), /got a DataView/],
    ['22,25', /got a string/],
    [{ x: 1, y: 2 }, /got an Object/],
    [[], /no points/],
  ];
  for (const [landmarks, why] of cases) {
    assert.throws(() => image({ image: PIXELS, landmarks }, 'images[2]'), (error) => {
      assert.ok(error instanceof TypeError);
      assert.equal(error.field, 'images[2].landmarks');
      assert.match(error.message, /^images\[2\]\.landmarks: /);
      assert.match(error.message, why);
      return true;
    }, String(landmarks));
  }
});

test('a mate\'s landmarks are named by their target field', () => {
  assert.throws(() => target({ mate: { image: PIXELS, landmarks: Float64Array.of(1) } }, 'targets[1]'),
    (error) => error.field === 'targets[1].pair.mate.landmarks');
  assert.deepEqual(target({ mate: { image: PIXELS, landmarks: Float64Array.from(FLAT) } }).pair.mate.landmarks, FLAT);
});
