'use strict';
// A small promise/stream wrapper around the faceaudit gRPC service (proto/faceaudit/v1/faceaudit.proto).
//
// The proto files are loaded at run time with @grpc/proto-loader: no generated code to keep in step.
// Tensors are { shape: number[], data: Float32Array }; images are { encoded: Buffer } (PNG, JPEG) or
// { pixels: tensor } with values in [0, 255]; Struct fields (options, spec, metadata, results) are
// plain JavaScript objects. Failed calls reject with a FaceAuditError carrying the gRPC status.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = process.env.FACEAUDIT_PROTO_ROOT || path.resolve(__dirname, '..', '..', '..', 'proto');
const CHUNK_BYTES = 1 << 20; // model upload chunks: far below the server's 64 MiB message limit
const MAX_MESSAGE_BYTES = 64 << 20; // the server's default limits (proto/README.md)

function loadPackage(root = PROTO_ROOT) {
  const definition = protoLoader.loadSync('faceaudit/v1/faceaudit.proto', {
    includeDirs: [root],
    keepCase: true, // field names as in the proto: forward_passes, map_index
    longs: Number, // int64 counts and shapes stay far below 2^53
    enums: String,
    defaults: true,
    oneofs: true, // each oneof's set field is named in event.event, image.source, target.kind
  });
  return grpc.loadPackageDefinition(definition).faceaudit.v1;
}

class FaceAuditError extends Error {
  constructor(error) {
    super(`${grpc.status[error.code] || error.code}: ${error.details || error.message}`);
    this.name = 'FaceAuditError';
    this.code = error.code; // grpc.status.INVALID_ARGUMENT, ...
    this.codeName = grpc.status[error.code];
    this.details = error.details || error.message;
    const field = /^([A-Za-z_][\w.[\]-]*): /.exec(this.details || '');
    this.field = field ? field[1] : null; // INVALID_ARGUMENT messages start with the request field
  }
}

// ---- Struct <-> plain objects --------------------------------------------------------------

function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'boolean') return { boolValue: value };
  if (Array.isArray(value) || ArrayBuffer.isView(value)) return { listValue: { values: Array.from(value, toValue) } };
  if (typeof value === 'object') return { structValue: toStruct(value) };
  throw new TypeError(`cannot send a ${typeof value} in a Struct`);
}

function toStruct(object = {}) {
  const fields = {};
  for (const [key, value] of Object.entries(object || {})) fields[key] = toValue(value);
  return { fields };
}

const NON_FINITE = { nan: NaN, inf: Infinity, '-inf': -Infinity };

function fromValue(value, numbers) {
  switch (value.kind) {
    case 'numberValue': return value.numberValue;
    case 'stringValue':
      return numbers && value.stringValue in NON_FINITE ? NON_FINITE[value.stringValue] : value.stringValue;
    case 'boolValue': return value.boolValue;
    case 'structValue': return fromStruct(value.structValue, numbers);
    case 'listValue': return (value.listValue.values || []).map((v) => fromValue(v, numbers));
    default: return null;
  }
}

// numbers: the strings "nan", "inf", "-inf" (how the server sends non-finite results) become numbers.
function fromStruct(struct, numbers = false) {
  const object = {};
  for (const [key, value] of Object.entries((struct && struct.fields) || {})) object[key] = fromValue(value, numbers);
  return object;
}

// ---- tensors and images ---------------------------------------------------------------------

function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

// A Tensor message as { shape, data: Float32Array } (FLOAT16 widened); bytes are little-endian.
function tensorToArray(tensor) {
  const shape = tensor.shape.map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const bytes = tensor.data;
  const data = new Float32Array(count);
  const half = tensor.dtype === 'FLOAT16';
  if (bytes.length !== count * (half ? 2 : 4)) {
    throw new Error(`tensor of shape [${shape}] carries ${bytes.length} bytes`);
  }
  for (let i = 0; i < count; i += 1) data[i] = half ? halfToFloat(bytes.readUInt16LE(2 * i)) : bytes.readFloatLE(4 * i);
  return { shape, data };
}

function arrayToTensor({ shape, data }) {
  const count = shape.reduce((a, b) => a * b, 1);
  if (data.length !== count) throw new Error(`shape [${shape}] needs ${count} values, got ${data.length}`);
  const bytes = Buffer.alloc(4 * count);
  for (let i = 0; i < count; i += 1) bytes.writeFloatLE(data[i], 4 * i);
  return { dtype: 'FLOAT32', shape, data: bytes };
}

// A TypeError whose message starts with the request field, like the server's INVALID_ARGUMENT details.
function fieldError(field, message) {
  const error = new TypeError(`${field}: ${message}`);
  error.field = field;
  return error;
}

const isNumbers = (value) => Array.isArray(value) || (ArrayBuffer.isView(value) && !(value instanceof DataView));

function describe(value) {
  if (value === null || value === undefined) return String(value);
  const kind = typeof value === 'object' ? (value.constructor ? value.constructor.name : 'object') : typeof value;
  return `${/^[aeiou]/i.test(kind) ? 'an' : 'a'} ${kind}`;
}

// { name: [{ shape, data } per image] } as the proto's map<string, PartMasks>.
function partMasks(parts) {
  if (typeof parts !== 'object' || parts === null || Array.isArray(parts)) {
    throw fieldError('parts', `give an object of part name -> masks, not ${describe(parts)}`);
  }
  return Object.fromEntries(Object.entries(parts).map(([name, masks]) => {
    if (!Array.isArray(masks)) throw fieldError(`parts[${name}]`, `give an array of masks, not ${describe(masks)}`);
    return [name, { masks: masks.map(arrayToTensor) }];
  }));
}

// Landmarks as the proto's flat x0, y0, x1, y1, ...: from [[x, y], ...] pairs (each an Array or a typed
// array of two numbers; the Python client's (K, 2)) or from one flat Array or typed array (Float64Array, ...).
function landmarkValues(landmarks, field) {
  const fail = (why) => fieldError(field, `${why}; give [[x, y], ...] points or a flat (typed) array x0, y0, x1, y1, ...`);
  if (!isNumbers(landmarks)) throw fail(`got ${describe(landmarks)}`);
  if (landmarks.length === 0) throw fail('no points');
  const pairs = Array.isArray(landmarks) && landmarks.some((point) => typeof point === 'object' && point !== null);
  const values = [];
  for (let i = 0; i < landmarks.length; i += 1) {
    const point = landmarks[i];
    if (pairs && !(isNumbers(point) && point.length === 2)) {
      throw fail(`point ${i} is ${isNumbers(point) ? `${point.length} values, not an (x, y) pair` : describe(point)}`);
    }
    values.push(...(pairs ? point : [point]));
  }
  const bad = values.findIndex((v) => typeof v !== 'number' || !Number.isFinite(v));
  if (bad >= 0) throw fail(`value ${bad} (${String(values[bad])}) is not a finite number`);
  if (values.length % 2) throw fail(`${values.length} numbers do not make (x, y) pairs`);
  return values;
}

// An image from a file path, encoded bytes (Buffer) or pixels { shape: [h, w, 3], data }; for cis,
// { image: <one of those>, landmarks } adds the face's 5 or 68 landmarks in its own pixels, as
// [[x, y], ...] or a flat (typed) array x0, y0, x1, y1, ... `field` names the request field in errors.
function image(source, field = 'image') {
  if (source && typeof source === 'object' && !Buffer.isBuffer(source) && source.image !== undefined) {
    const message = image(source.image, field);
    if (source.landmarks === undefined || source.landmarks === null) return message;
    return { ...message, landmarks: landmarkValues(source.landmarks, `${field}.landmarks`) };
  }
  if (typeof source === 'string') return { encoded: fs.readFileSync(source) };
  if (Buffer.isBuffer(source)) return { encoded: source };
  if (source && source.shape && source.data) return { pixels: arrayToTensor(source) };
  if (source && (source.encoded || source.pixels)) return source; // already a message
  throw fieldError(field, 'an image is a file path, a Buffer of encoded bytes, { shape, data } pixels or '
    + '{ image, landmarks }');
}

// A target: a class index, { mate, nonMate } images (embedding models), or null (predicted class).
function target(value, field = 'target') {
  if (value === null || value === undefined) return { predicted_class: true };
  if (typeof value === 'number') return { class_index: value };
  if (value.mate) {
    const pair = { mate: image(value.mate, `${field}.pair.mate`) };
    if (value.nonMate) pair.non_mate = image(value.nonMate, `${field}.pair.non_mate`);
    return { pair };
  }
  throw fieldError(field, 'a target is a class index, { mate, nonMate } or null');
}

function saliencyMap(message) {
  return {
    imageIndex: message.image_index,
    targetIndex: message.target_index,
    values: tensorToArray(message.values),
    method: message.method,
    forwardPasses: message.forward_passes,
    signed: message.signed,
    frame: message.frame,
    metadata: fromStruct(message.metadata),
  };
}

function modelInfo(message) {
  return { ...message, details: fromStruct(message.details) };
}

// ---- the client -----------------------------------------------------------------------------

class FaceAuditClient {
  // target: "host:port". options: token (bearer), rootCerts (PEM Buffer: TLS), timeoutMs (per call).
  constructor(address, { token = null, rootCerts = null, timeoutMs = null, protoRoot = PROTO_ROOT } = {}) {
    const api = loadPackage(protoRoot);
    const credentials = rootCerts ? grpc.credentials.createSsl(rootCerts) : grpc.credentials.createInsecure();
    const options = {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    };
    this.models = new api.Models(address, credentials, options);
    const channel = { channelOverride: this.models.getChannel() }; // one connection for every service
    this.explainService = new api.Explain(address, credentials, channel);
    this.evaluateService = new api.Evaluate(address, credentials, channel);
    this.auditService = new api.Audit(address, credentials, channel);
    this.timeoutMs = timeoutMs;
    this.metadata = new grpc.Metadata();
    if (token) this.metadata.set('authorization', `Bearer ${token}`);
  }

  close() {
    this.models.close();
  }

  callOptions(timeoutMs) {
    const ms = timeoutMs ?? this.timeoutMs;
    return ms ? { deadline: new Date(Date.now() + ms) } : {};
  }

  unary(stub, method, request, timeoutMs) {
    return new Promise((resolve, reject) => {
      stub[method](request, this.metadata, this.callOptions(timeoutMs), (error, response) => {
        if (error) reject(new FaceAuditError(error));
        else resolve(response);
      });
    });
  }

  // Resolves after the stream ends; onEvent(event) sees every event. A throwing onEvent cancels the call.
  stream(stub, method, request, timeoutMs, onEvent) {
    return new Promise((resolve, reject) => {
      const call = stub[method](request, this.metadata, this.callOptions(timeoutMs));
      let failed = null;
      call.on('data', (event) => {
        if (failed) return;
        try {
          onEvent(event);
        } catch (error) {
          failed = error;
          call.cancel(); // the server stops within one batch of forward passes
        }
      });
      call.on('error', (error) => reject(failed || new FaceAuditError(error)));
      call.on('end', () => (failed ? reject(failed) : resolve()));
    });
  }

  // -- Models

  // model: a file path or a Buffer. name defaults to the file's stem; spec overrides what the graph reveals.
  registerModel(model, { name = null, spec = {}, chunkBytes = CHUNK_BYTES, timeoutMs } = {}) {
    const data = Buffer.isBuffer(model) ? model : fs.readFileSync(model);
    const modelName = name || (Buffer.isBuffer(model) ? null : path.basename(model, path.extname(model)));
    if (!modelName) return Promise.reject(new TypeError('a model given as a Buffer needs a name'));
    return new Promise((resolve, reject) => {
      const call = this.models.Register(this.metadata, this.callOptions(timeoutMs), (error, response) => {
        if (error) reject(new FaceAuditError(error));
        else resolve(modelInfo(response));
      });
      call.write({ name: modelName, spec: toStruct(spec), data: data.subarray(0, chunkBytes) });
      for (let start = chunkBytes; start < data.length; start += chunkBytes) {
        call.write({ data: data.subarray(start, start + chunkBytes) });
      }
      call.end();
    });
  }

  async registerFromRepository(name, { spec = {}, timeoutMs } = {}) {
    return modelInfo(await this.unary(this.models, 'RegisterFromRepository', { name, spec: toStruct(spec) }, timeoutMs));
  }

  async listModels({ timeoutMs } = {}) {
    return (await this.unary(this.models, 'List', {}, timeoutMs)).models.map(modelInfo);
  }

  async getModel(model, { timeoutMs } = {}) {
    return modelInfo(await this.unary(this.models, 'Get', { model }, timeoutMs));
  }

  async unregisterModel(model, { timeoutMs } = {}) {
    return modelInfo((await this.unary(this.models, 'Unregister', { model }, timeoutMs)).model);
  }

  // -- Explain

  async listMethods({ timeoutMs } = {}) {
    return (await this.unary(this.explainService, 'ListMethods', {}, timeoutMs)).methods;
  }

  // { model, method, images: [image sources], targets: [target values], options: {} } -> maps
  // (image-major: maps[i * targets.length + j]). With onProgress(progress) the call streams
  // { done, total, phase, map_index } events while the maps are computed.
  async explain({ model, method, images, targets = [], options = {} }, { onProgress = null, timeoutMs } = {}) {
    const request = { model, method, options: toStruct(options), images: images.map((s, i) => image(s, `images[${i}]`)),
      targets: targets.map((t, j) => target(t, `targets[${j}]`)) };
    if (!onProgress) {
      return (await this.unary(this.explainService, 'Explain', request, timeoutMs)).maps.map(saliencyMap);
    }
    const maps = [];
    await this.stream(this.explainService, 'ExplainStream', request, timeoutMs, (event) => {
      if (event.event === 'map') maps.push(saliencyMap(event.map));
      else onProgress(event.progress);
    });
    return maps;
  }

  // -- Evaluate

  async listGames({ timeoutMs } = {}) {
    return (await this.unary(this.evaluateService, 'ListGames', {}, timeoutMs)).games;
  }

  // { model, game, options, items: [{ image, target, maps: {name: tensor}, region, name }], methods,
  //   images, pairs: [{ first, second, genuine }], parts: {name: [tensor per image]} } -> the game's result;
  //   onPoint sees every curve point. parts (correspondence): one (H, W) mask per image, non-zero inside;
  //   the server plays them in name order.
  async evaluate({ model, game, options = {}, items = [], methods = [], images = [], pairs = [], parts = {} },
    { onPoint = null, onProgress = null, timeoutMs } = {}) {
    const request = {
      model, game, options: toStruct(options), methods, images: images.map((s, i) => image(s, `images[${i}]`)), pairs,
      parts: partMasks(parts),
      items: items.map((item, i) => ({
        image: image(item.image, `items[${i}].image`),
        target: item.target === undefined ? undefined : target(item.target, `items[${i}].target`),
        maps: Object.fromEntries(Object.entries(item.maps || {}).map(([k, v]) => [k, arrayToTensor(v)])),
        region: item.region ? arrayToTensor(item.region) : undefined,
        name: item.name || '',
      })),
    };
    let result = null;
    await this.stream(this.evaluateService, 'Evaluate', request, timeoutMs, (event) => {
      if (event.event === 'point' && onPoint) onPoint(event.point);
      else if (event.event === 'progress' && onProgress) onProgress(event.progress);
      else if (event.event === 'result') result = fromStruct(event.result, true);
    });
    return result;
  }

  // -- Audit: a dataset folder of the server's --dataset-repository -> audit.json

  async audit({ model, dataset, methods = [], games = [], options = {}, groupColumn = '' },
    { onProgress = null, timeoutMs } = {}) {
    const request = { model, dataset, methods, games, options: toStruct(options), group_column: groupColumn };
    let summary = null;
    await this.stream(this.auditService, 'Audit', request, timeoutMs, (event) => {
      if (event.event === 'summary') summary = fromStruct(event.summary, true);
      else if (onProgress) onProgress(event.progress);
    });
    return summary;
  }
}

module.exports = {
  FaceAuditClient, FaceAuditError, status: grpc.status, loadPackage, toStruct, fromStruct, tensorToArray,
  arrayToTensor, image, target, PROTO_ROOT,
};
