// The control plane's boundaries (docs/control-plane.md §2): crafted paths never reach a route of
// another class and never get 200 with status data (dot segments, encoded slashes, `;x`, trailing
// and doubled slashes, prefixes of /setup); a percent-encoded path that decodes to a route keeps
// that route's class; /setup's files carry the strict CSP; the public listener serves the public
// routes only; a NUL in a path parameter is 400, not an internal error; a route without an auth
// class stops the server at start; an admin port in use fails the start with its own message; a
// request trickling in is cut off (408) within 10 s and a listener takes 256 connections.
import { request as httpRequest } from 'node:http';
import { connect, createServer } from 'node:net';
import t from 'tap';
import { loadConfig } from '../../proxy/config.js';
import { StartupError } from '../../proxy/errors.js';
import { createLogger } from '../../proxy/logger.js';
import { startProxy } from '../../proxy/index.js';
import { setupCsp } from '../../proxy/admin/routes/setup.js';
import { readSetupFiles } from '../../proxy/admin/setup-files.js';
import { adminFixture, capturingLogger, injectableServer, request } from './admin-fixture.js';

/** A GET with the path sent exactly as given (fetch would normalize it). */
function raw(
  base: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, path, method: 'GET', headers }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => {
        resolve({ status: response.statusCode ?? 0, text });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('crafted paths never reach status data', async (t) => {
  const f = await adminFixture(t);
  const operator = await f.token('operator');
  const org = await f.token('org', f.orgs.acme);
  const crafted = [
    '/setupanything',
    '/setup/',
    '/SETUP',
    '/setup/../api/v1/status',
    '/setup/%2e%2e/api/v1/status',
    '/api/v1%2fstatus',
    '/api%2Fv1%2Fstatus',
    '/api/v1/status;x',
    '/api/v1/status/',
    '//api/v1/status',
    '/api//v1/status',
    '/api/v1/./status',
    '/API/V1/STATUS',
    '/healthz/../api/v1/status',
  ];
  for (const path of crafted) {
    const tokens: Record<string, Record<string, string>> = {
      'no token': {},
      'an org token': { authorization: `Bearer ${org}` },
      'an operator token': { authorization: `Bearer ${operator}` },
    };
    for (const [who, headers] of Object.entries(tokens)) {
      const answer = await raw(f.base, path, headers);
      t.not(answer.status, 200, `${path} with ${who}: not 200 (${String(answer.status)})`);
      t.notOk(answer.text.includes('"sessions"'), `${path} with ${who}: no status data`);
    }
  }
  const encoded = await raw(f.base, '/api/v1/%73tatus');
  t.equal(encoded.status, 401, '/api/v1/%73tatus is the status route and keeps its class');
  const encodedOrg = await raw(f.base, '/api/v1/%73tatus', { authorization: `Bearer ${org}` });
  t.equal(encodedOrg.status, 403);
  const long = await raw(f.base, `/api/v1/validate/${'a'.repeat(101)}`);
  t.equal(long.status, 404, 'a path parameter over 100 characters is no route');
  t.equal(long.text, '{"error":"not_found","message":"not found"}');
  const bad = await raw(f.base, '/api/v1/validate/%E0%A4%A');
  t.equal(bad.status, 400, 'a malformed percent-encoding');
  t.equal(bad.text, '{"error":"invalid","message":"malformed URL"}');
});

t.test('/setup and its files carry the strict headers', async (t) => {
  const f = await adminFixture(t);
  const files = readSetupFiles();
  const expected = {
    '/setup': files.html,
    '/setup.js': files.js,
    '/setup.css': files.css,
  };
  for (const [path, file] of Object.entries(expected)) {
    const answer = await request(f.base, path);
    if (file === undefined) {
      t.equal(answer.status, 404, `${path}: absent, 404`);
      continue;
    }
    t.equal(answer.status, 200, path);
    t.equal(answer.text, file.body.toString('utf8'), `${path}: the file`);
    t.equal(answer.headers.get('content-type'), file.contentType);
    t.equal(answer.headers.get('content-security-policy'), setupCsp);
    t.equal(answer.headers.get('referrer-policy'), 'no-referrer');
    t.equal(answer.headers.get('x-content-type-options'), 'nosniff');
    t.equal(answer.headers.get('cross-origin-opener-policy'), 'same-origin');
  }
  t.equal(
    setupCsp,
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  );
});

t.test('the public listener serves only the public routes', async (t) => {
  const f = await adminFixture(t, { public_port: 0 });
  const port = f.proxy.publicPort;
  t.ok(port !== undefined && port !== f.proxy.adminPort, 'a listener of its own');
  const base = `http://127.0.0.1:${String(port)}`;
  const operator = await f.token('operator');
  t.equal((await request(base, '/healthz')).status, 200);
  t.equal((await request(base, '/api/v1/validate/acme-analytics')).status, 200);
  const info = await request(base, '/api/v1/invites/info', {
    method: 'POST',
    json: { invite: 'x' },
  });
  t.equal(info.status, 410);
  for (const path of ['/api/v1/status', '/metrics', `/api/v1/orgs/${f.orgs.acme}`]) {
    const answer = await request(base, path, { token: operator });
    t.equal(answer.status, 404, `${path}: no such route there`);
  }
});

t.test('a NUL in a path parameter is 400 with a fixed message, never an error line', async (t) => {
  const { logger, lines } = capturingLogger('debug');
  const f = await adminFixture(t, {}, { logger });
  const answer = await raw(f.base, '/api/v1/validate/%00');
  t.equal(answer.status, 400);
  t.equal(
    answer.text,
    '{"error":"invalid","message":"a text value holds a character the database cannot store"}',
  );
  const errors = lines.filter((line) => (JSON.parse(line) as { level: number }).level >= 50);
  t.same(errors, [], 'no error-level log line');
});

t.test('a route without an auth class stops the server at start', async (t) => {
  const f = await adminFixture(t);
  const app = await injectableServer(t, f);
  t.throws(() => app.get('/unclassified', () => 'x'), {
    message:
      'route GET /unclassified declares no auth class (config.auth: public, metrics, org, operator)',
  });
});

t.test('an admin port in use fails the start with its own message', async (t) => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.teardown(() => holder.close());
  const address = holder.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const config = loadConfig({
    flags: {
      port: 0,
      control_url: 'postgresql://nobody@127.0.0.1:1/postgres',
      admin_port: port,
      log_level: 'silent',
    },
  });
  const error = await startProxy(config, { logger: createLogger('silent') }).then(
    () => undefined,
    (error: unknown) => error,
  );
  t.type(error, StartupError);
  t.equal(
    (error as Error).message,
    `cannot listen for the HTTP control plane (admin_host, admin_port) on 127.0.0.1:${String(port)}: listen EADDRINUSE: address already in use 127.0.0.1:${String(port)}`,
  );
});

t.test('a body trickling in is cut off: 408 and closed within 12 s', async (t) => {
  const f = await adminFixture(t);
  const { hostname, port } = new URL(f.base);
  const started = Date.now();
  const socket = connect(Number(port), hostname);
  let answer = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (answer += chunk));
  socket.on('error', () => undefined);
  socket.write(
    'POST /api/v1/invites/info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
      'Content-Length: 16000\r\n\r\n{',
  );
  const drip = setInterval(() => socket.write(' '), 2000);
  const closedAfter = await new Promise<number>((resolve) => {
    const give = setTimeout(() => {
      resolve(Infinity);
    }, 15_000);
    socket.on('close', () => {
      clearTimeout(give);
      resolve(Date.now() - started);
    });
  });
  clearInterval(drip);
  socket.destroy();
  t.ok(closedAfter < 12_500, `closed after ${String(closedAfter)} ms (< 12.5 s)`);
  t.match(answer, /^HTTP\/1\.1 408 /, 'with 408');
});

t.test('each listener takes at most 256 connections', async (t) => {
  const f = await adminFixture(t);
  const app = await injectableServer(t, f);
  t.equal(app.server.maxConnections, 256);
});
