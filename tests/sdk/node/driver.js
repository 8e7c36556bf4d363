// Calls Stigg's Node.js server SDK (@stigg/node-server-sdk, installed from this directory's
// package-lock.json) as its README does, run by tests/sdk with `node driver.js`.
//
// Two modes, chosen by the script's "listen":
//
// Once (default): stdin is one JSON script, read to its end.
//   stdin:  {"url", "key", "config"?: {...}, "steps": [{"call", "args"?: [...]}]}
//           Stigg.initialize({apiKey, baseUri: url, enableEdge: false,
//           realtimeUpdatesEnabled: false, ...config}), then `await stigg.waitForInitialization()`
//           then `await stigg[call](...args)` for each step. A string "$<n>.<key>.<key>…" in
//           args is the value at that path of step n's answer.
//   stdout: {"init": <item>, "results": [<item> per step]} (no steps run when the
//           initialization failed), an item being {"ok": <answer>} or
//           {"error": {"type", "message", "codes"}} (codes: the SDK's errorCode, Stigg's
//           ErrorCode), with "requests": the HTTP requests the SDK made meanwhile, as
//           "GET /v1/c/…/entitlements.json" or "POST /graphql <operation name>". Dates in
//           answers become ISO strings.
//
// Listen ("listen": true): the script is stdin's first line, and the SDK keeps running.
//   The SDK is initialized with realtime updates on (`realtimeUpdatesEnabled: true`, its
//   websocket at `wsUrl` = ws://<url's host>), the driver waits until the server has
//   acknowledged the websocket (connection_ack), the SDK has sent its subscriptions and a
//   ping the driver sends after them is answered (the server reads a connection's
//   messages in order), runs the script's steps, and prints {"ready": {"init", "results"}}.
//   Then each further stdin line is a step (its {"result": <item>} printed), until stdin
//   ends (the SDK closed, the driver exits). Meanwhile every event the SDK emits
//   (`stigg.addListener('usageUpdated' | 'entitlementsUpdated' | 'creditBalanceUpdated' |
//   'packagePublished', …)`) is printed as {"event": <name>, "data": <payload>}, and every
//   websocket frame as {"frame": {"dir": "in" | "out", "message": <the JSON message>}}.
//   One JSON object a line.
'use strict';

const http = require('http');
const WebSocket = require('ws'); // the one isomorphic-ws hands graphql-ws

// -- what goes over the wire (recorded, never changed) --------------------------------------

const requests = [];

function headerOf(headers, name) {
  if (!headers) return undefined;
  if (typeof headers.get === 'function') return headers.get(name) || undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  return Array.isArray(value) ? value[0] : value;
}

const nativeRequest = http.request;
http.request = function request(...args) {
  const req = nativeRequest.apply(this, args);
  const options = args.find((a) => a && typeof a === 'object' && !(a instanceof URL)) || {};
  const operation = headerOf(options.headers, 'x-graphql-operation-name');
  const upgrade = headerOf(options.headers, 'upgrade');
  const line = `${req.method} ${req.path}${operation ? ` ${operation}` : ''}`;
  requests.push(upgrade ? `${line} (${upgrade})` : line);
  return req;
};
http.get = function get(...args) {
  const req = http.request(...args);
  req.end();
  return req;
};

function print(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

let onFrame = () => {};
let listening = false;
const nativeSend = WebSocket.prototype.send;
WebSocket.prototype.send = function send(data, ...rest) {
  onFrame('out', data, this);
  return nativeSend.call(this, data, ...rest);
};
const nativeEmit = WebSocket.prototype.emit;
WebSocket.prototype.emit = function emit(event, data, ...rest) {
  if (event === 'message') onFrame('in', data, this);
  if (event === 'close' && listening) {
    print({ frame: { dir: 'close', message: { code: data, reason: String(rest[0] || '') } } });
  }
  return nativeEmit.call(this, event, data, ...rest);
};

const { Stigg } = require('@stigg/node-server-sdk');

// -- calling the SDK ------------------------------------------------------------------------

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

function initialize(script, config) {
  const silent = { log() {}, error() {}, warn() {}, debug() {}, info() {} };
  requests.length = 0;
  return Stigg.initialize({
    apiKey: script.key,
    baseUri: script.url,
    enableEdge: false,
    realtimeUpdatesEnabled: false,
    logConfiguration: { logLevel: 'error', logger: silent },
    ...config,
    ...(script.config || {}),
  });
}

async function started(stigg) {
  try {
    await stigg.waitForInitialization();
    return { ok: true, requests: requests.splice(0) };
  } catch (err) {
    return { ...failure(err), requests: requests.splice(0) };
  }
}

async function call(stigg, step, answers) {
  requests.length = 0;
  let item;
  try {
    const args = resolveRefs(step.args || [], answers);
    const answer = plain(await stigg[step.call](...args));
    answers.push(answer);
    item = { ok: answer };
  } catch (err) {
    answers.push(null);
    item = failure(err);
  }
  item.requests = requests.splice(0);
  return item;
}

async function once(script) {
  const stigg = initialize(script, {});
  const answers = [];
  const out = [];
  const init = await started(stigg);
  if (init.ok) {
    for (const step of script.steps) out.push(await call(stigg, step, answers));
  }
  stigg.close();
  process.stdout.write(JSON.stringify({ init, results: out }), () => process.exit(0));
}

// -- listening ------------------------------------------------------------------------------

const SUBSCRIPTIONS = 4; // OnEntitlementsUpdated, OnUsageUpdated, OnPackagePublished,
// OnCreditBalanceUpdated: what the 3.95 SDK's init() subscribes to
const EVENTS = ['usageUpdated', 'entitlementsUpdated', 'creditBalanceUpdated', 'packagePublished'];

function subscribed() {
  // Resolves once the server acknowledged the connection, the SDK sent its subscriptions
  // after that, and a ping sent after them came back.
  return new Promise((resolve) => {
    let acked = false;
    let subscribes = 0;
    let pinged = false;
    onFrame = (dir, data, socket) => {
      let message;
      try {
        message = JSON.parse(String(data));
      } catch (err) {
        message = { unparsed: String(data) };
      }
      print({ frame: { dir, message } });
      if (dir === 'in' && message.type === 'connection_ack') acked = true;
      if (dir === 'out' && message.type === 'subscribe' && acked) subscribes += 1;
      if (dir === 'in' && message.type === 'pong' && message.payload &&
          message.payload.creditd === 'ready') {
        resolve();
        return;
      }
      if (acked && subscribes >= SUBSCRIPTIONS && !pinged) {
        pinged = true;
        setImmediate(() => socket.send(JSON.stringify({ type: 'ping', payload: { creditd: 'ready' } })));
      }
    };
  });
}

function lines(onLine) {
  let buffer = '';
  process.stdin.setEncoding('utf8');
  return new Promise((resolve) => {
    process.stdin.on('data', (chunk) => {
      buffer += chunk;
      let at = buffer.indexOf('\n');
      while (at >= 0) {
        const line = buffer.slice(0, at).trim();
        buffer = buffer.slice(at + 1);
        if (line) onLine(line);
        at = buffer.indexOf('\n');
      }
    });
    process.stdin.on('end', () => {
      if (buffer.trim()) onLine(buffer.trim());
      resolve();
    });
  });
}

async function listen(script, queue) {
  listening = true;
  const wsUrl = script.url.replace(/^http/, 'ws');
  const ready = subscribed();
  const stigg = initialize(script, { realtimeUpdatesEnabled: true, wsUrl });
  for (const name of EVENTS) {
    stigg.addListener(name, (data) => print({ event: name, data: plain(data) }));
  }
  const answers = [];
  const init = await started(stigg);
  const results = [];
  if (init.ok) {
    await ready;
    for (const step of script.steps) results.push(await call(stigg, step, answers));
  }
  print({ ready: { init, results } });
  for (;;) {
    const line = await queue.next();
    if (line === null) break;
    print({ result: await call(stigg, JSON.parse(line), answers) });
  }
  stigg.close();
  process.exit(0);
}

function lineQueue() {
  const waiting = [];
  const buffered = [];
  let ended = false;
  const done = lines((line) => {
    if (waiting.length) waiting.shift()(line);
    else buffered.push(line);
  });
  done.then(() => {
    ended = true;
    while (waiting.length) waiting.shift()(null);
  });
  return {
    next() {
      if (buffered.length) return Promise.resolve(buffered.shift());
      if (ended) return Promise.resolve(null);
      return new Promise((resolve) => waiting.push(resolve));
    },
  };
}

async function main() {
  // The first line decides: a listening script is one line; a one-off script is all of stdin.
  const queue = lineQueue();
  const first = await queue.next();
  let script;
  try {
    script = JSON.parse(first);
  } catch (err) {
    let text = first || '';
    for (let line = await queue.next(); line !== null; line = await queue.next()) text += line;
    script = JSON.parse(text);
  }
  if (script.listen) return listen(script, queue);
  return once(script);
}

main().catch((err) => {
  process.stderr.write(`${(err && err.stack) || err}\n`);
  process.exit(1);
});
