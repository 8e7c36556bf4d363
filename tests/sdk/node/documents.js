// Prints the GraphQL documents the Node SDK sends ({operationName: text}): those of its
// @stigg/api-client-js dependency (same lock) that the SDK's own code refers to (the
// package defines more, e.g. GetCreditLedger, that no SDK method sends). tests/sdk
// validates them against the schema /graphql serves.
'use strict';

const fs = require('fs');
const path = require('path');
const { print } = require('graphql');
const sdk = require('@stigg/api-client-js/src/generated/sdk');

function jsFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return jsFiles(full);
    return entry.name.endsWith('.js') ? [full] : [];
  });
}

const dist = path.dirname(require.resolve('@stigg/node-server-sdk'));
const used = new Set();
for (const file of jsFiles(dist)) {
  for (const match of fs.readFileSync(file, 'utf8').matchAll(/\.([A-Za-z0-9]+)Document\b/g)) {
    used.add(match[1]);
  }
}
const out = {};
for (const name of [...used].sort()) {
  const document = sdk[`${name}Document`];
  if (document && document.kind === 'Document') out[name] = print(document);
}
process.stdout.write(JSON.stringify(out));
