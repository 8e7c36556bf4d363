// Calls Stigg's Node.js server SDK (@stigg/node-server-sdk, installed from this directory's
// package-lock.json) as its README does, run by tests/sdk with `node driver.js`.
//
// stdin:  {"url", "key", "config"?: {...}, "steps": [{"call", "args"?: [...]}]}
//         Stigg.initialize({apiKey, baseUri: url, enableEdge: false,
//         realtimeUpdatesEnabled: false, ...config}), then `await stigg.waitForInitialization()`
//         then `await stigg[call](...args)` for each step. A string "$<n>.<key>.<key>…" in
//         args is the value at that path of step n's answer.
// stdout: {"init": <item>, "results": [<item> per step]} (no steps run when the
//         initialization failed), an item being {"ok": <answer>} or
//         {"error": {"type", "message", "codes"}} (codes: the SDK's errorCode, Stigg's
//         ErrorCode). Dates in answers become ISO strings.
'use strict';

const { Stigg } = require('@stigg/node-server-sdk');

function readStdin() {
  return new Promise((resolve, reject) => {
    let text = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => { text += chunk; });
    process.stdin.on('end', () => resolve(JSON.parse(text)));
    process.stdin.on('error', reject);
  });
}

function resolveRefs(value, answers) {
  if (typeof value === 'string' && value.startsWith('$') && value.includes('.')) {
    const [index, ...path] = value.slice(1).split('.');
    return path.reduce((found, key) => found[key], answers[Number(index)]);
  }
  if (Array.isArray(value)) return value.map((v) => resolveRefs(v, answers));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveRefs(v, answers)]));
  }
  return value;
}

function failure(err) {
  return {
    error: {
      type: (err && err.constructor && err.constructor.name) || typeof err,
      message: String((err && err.message) || err),
      codes: err && err.errorCode ? [err.errorCode] : [],
    },
  };
}

function plain(answer) {
  // Dates as ISO strings, `undefined` fields dropped, as JSON carries them.
  return answer === undefined ? null : JSON.parse(JSON.stringify(answer));
}

async function main() {
  const script = await readStdin();
  const silent = { log() {}, error() {}, warn() {}, debug() {}, info() {} };
  const stigg = Stigg.initialize({
    apiKey: script.key,
    baseUri: script.url,
    enableEdge: false,
    realtimeUpdatesEnabled: false,
    logConfiguration: { logLevel: 'error', logger: silent },
    ...(script.config || {}),
  });
  const answers = [];
  const out = [];
  let init;
  try {
    await stigg.waitForInitialization();
    init = { ok: true };
  } catch (err) {
    init = failure(err);
  }
  if (init.ok) {
    for (const step of script.steps) {
      try {
        const args = resolveRefs(step.args || [], answers);
        const answer = plain(await stigg[step.call](...args));
        answers.push(answer);
        out.push({ ok: answer });
      } catch (err) {
        answers.push(null);
        out.push(failure(err));
      }
    }
  }
  stigg.close();
  process.stdout.write(JSON.stringify({ init, results: out }), () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${(err && err.stack) || err}\n`);
  process.exit(1);
});
