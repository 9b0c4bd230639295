'use strict';
// Start a real `faceaudit serve` on a free port (it prints "faceaudit serving gRPC on port N").
//
// FACEAUDIT names the faceaudit command; default: the repository's .venv/bin/faceaudit, else the PATH's.

const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');

const REPO = path.resolve(__dirname, '..', '..', '..');
const DEMO_MODELS = path.join(REPO, 'service', 'faceaudit', 'demo', 'models');

function faceauditCommand() {
  if (process.env.FACEAUDIT) return process.env.FACEAUDIT;
  const venv = path.join(REPO, '.venv', 'bin', 'faceaudit');
  return fs.existsSync(venv) ? venv : 'faceaudit';
}

function startServer(extraArgs = [], { startupMs = 60000 } = {}) {
  const args = ['serve', '--host', '127.0.0.1', '--port', '0', '--model-repository', DEMO_MODELS, ...extraArgs];
  const child = spawn(faceauditCommand(), args, {
    env: { ...process.env, FACEAUDIT_DRAIN_NOTICE_S: '0', FACEAUDIT_GRACE_S: '5' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`faceaudit serve did not report its port within ${startupMs} ms:\n${output}`));
    }, startupMs);
    const collect = (chunk) => {
      output += chunk;
      const match = /serving gRPC on port (\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve({ address: `127.0.0.1:${match[1]}`, port: Number(match[1]), child, stop: () => stop(child) });
      }
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (error) => { clearTimeout(timer); reject(error); });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`faceaudit serve exited (${code}):\n${output}`)); });
  });
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGTERM'); // graceful: NOT_SERVING, drain, stop
  });
}

module.exports = { startServer, DEMO_MODELS, REPO };
