// A keyhost keystore plugin in JavaScript: KES's "generic" keystore REST protocol.
//
// The same plugin as plugins/python/generic, built with componentize-js (npm
// @bytecodealliance/componentize-js) against keyhost's WIT, world
// keystore-plugin-http:
//
//     npm ci && npm run build        # writes generic_js.wasm
//
// Setting: `endpoint`, the service's URL; keyhost must grant it (allow.http).
// Exported functions are synchronous, so HTTP goes through wasi:http directly
// (fetch needs an event loop), blocking on the response's pollable.

import { getAll } from 'wasi:config/store@0.2.0-rc.1';
import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingRequest, OutgoingBody } from 'wasi:http/types@0.2.12';

const SETTINGS = [
  {
    name: 'endpoint',
    required: true,
    secret: false,
    description: "the generic keystore service's URL, e.g. http://127.0.0.1:7001",
  },
];

// One instance serves one call at a time; the endpoint is read once, in open().
let endpoint = null;

const fail = (tag, val) => {
  throw val === undefined ? { tag } : { tag, val };
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// A request that got no answer: the host's refusal (the origin is not granted) is
// access-denied, anything else unavailable.
function transportFailure(code) {
  if (code && code.tag === 'HTTP-request-denied') {
    fail('access-denied', `${endpoint} is not granted to this plugin (allow.http)`);
  }
  fail('unavailable', `cannot reach ${endpoint}: ${JSON.stringify(code)}`);
}

function toBase64(bytes) {
  let text = '';
  for (let at = 0; at < bytes.length; at += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(at, at + 0x8000));
  }
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

// One HTTP exchange through wasi:http; returns [status, body bytes].
function send(method, path, body) {
  const [scheme, authority] = endpoint.split('://');
  const headers = body ? [['content-type', encoder.encode('application/json')]] : [];
  const request = new OutgoingRequest(Fields.fromList(headers));
  request.setMethod({ tag: method });
  request.setScheme({ tag: scheme === 'https' ? 'HTTPS' : 'HTTP' });
  request.setAuthority(authority);
  request.setPathWithQuery(path);
  const outgoing = request.body();
  // Hand the request to the host first, then stream the body.
  let future;
  try {
    future = handle(request, undefined);
  } catch (e) {
    transportFailure(e.payload ?? e);
  }
  if (body) {
    const stream = outgoing.write();
    for (let at = 0; at < body.length; at += 4096) {
      stream.blockingWriteAndFlush(body.subarray(at, at + 4096));
    }
    stream[Symbol.dispose]();
  }
  OutgoingBody.finish(outgoing, undefined);
  future.subscribe().block();
  const answer = future.get();
  if (answer !== undefined && answer.tag === 'ok' && answer.val.tag === 'err') {
    transportFailure(answer.val.val);
  }
  if (answer === undefined || answer.tag !== 'ok' || answer.val.tag !== 'ok') {
    fail('unavailable', `no answer from ${endpoint}: ${JSON.stringify(answer)}`);
  }
  const response = answer.val.val;
  const status = response.status();
  const incoming = response.consume();
  const stream = incoming.stream();
  const chunks = [];
  let size = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (e) {
      if ((e.payload ?? e).tag === 'closed') break;
      throw e;
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  stream[Symbol.dispose]();
  const data = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    data.set(chunk, at);
    at += chunk.length;
  }
  return [status, data];
}

function check(status, data, ok) {
  if (ok.includes(status)) return;
  if (status === 404) fail('not-found');
  if (status === 400 && decoder.decode(data).includes('exists')) fail('already-exists');
  if (status === 401 || status === 403) fail('access-denied', `the service refused: HTTP ${status}`);
  if (status === 429) fail('throttled', undefined);
  fail('unavailable', `the service answered HTTP ${status}`);
}

function valid(name) {
  // Names go into the URL path: only what needs no escaping.
  if (!/^[0-9A-Za-z_\-][0-9A-Za-z_\-.]{0,254}$/.test(name)) {
    fail('invalid-argument', `'${name}' is not a portable key name`);
  }
  return name;
}

// Byte order of UTF-8 strings (JavaScript compares UTF-16 code units).
function byteCompare(a, b) {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

export const store = {
  info() {
    return { name: 'generic-js', version: '0.1.0', features: [], settings: SETTINGS };
  },

  open() {
    const values = new Map(getAll());
    for (const key of values.keys()) {
      if (!SETTINGS.some((s) => s.name === key)) {
        fail('invalid-argument', `unknown setting '${key}'; this plugin reads endpoint`);
      }
    }
    const value = (values.get('endpoint') ?? '').trim();
    if (!value) fail('invalid-argument', "missing required setting 'endpoint': the service's URL");
    if (!/^[\x21-\x7e]+$/.test(value)) fail('invalid-argument', "setting 'endpoint' holds a space, a control or a non-ASCII character; it must be an http(s) URL");
    if (!/^https?:\/\//.test(value)) fail('invalid-argument', `setting 'endpoint': ${value} is not an http(s) URL`);
    endpoint = value.replace(/\/+$/, '');
  },

  status() {
    const [status, data] = send('get', '/v1/key');
    check(status, data, [200]);
    return { latencyMs: undefined, detail: undefined };
  },

  create(name, value) {
    const body = encoder.encode(JSON.stringify({ bytes: toBase64(value) }));
    const [status, data] = send('post', `/v1/key/${valid(name)}`, body);
    check(status, data, [200, 201]);
  },

  get(name) {
    const [status, data] = send('get', `/v1/key/${valid(name)}`);
    check(status, data, [200]);
    return fromBase64(JSON.parse(decoder.decode(data)).bytes);
  },

  delete(name) {
    const [status, data] = send('delete', `/v1/key/${valid(name)}`);
    check(status, data, [200, 204]);
  },

  list(prefix, after, limit) {
    const [status, data] = send('get', '/v1/key');
    check(status, data, [200]);
    const names = new Set();
    for (const line of decoder.decode(data).split('\n')) {
      if (line.trim()) names.add(JSON.parse(line).name);
    }
    const chosen = [...names]
      .filter((n) => n.startsWith(prefix) && (after === undefined || byteCompare(n, after) > 0))
      .sort(byteCompare);
    const max = Math.max(limit, 1);
    const page = chosen.slice(0, max);
    return { names: page, next: chosen.length > max ? page[page.length - 1] : undefined };
  },
};
