// Health and readiness (docs/control-plane.md §2): /healthz answers 200 without the database,
// /readyz is 503 within 3 s of the control database going away and 200 again within 3 s of its
// return; while it is away the authenticated routes, /metrics and /api/v1/status included, answer
// 503 with Retry-After: 1; once close() begins /readyz is 503 "draining". The database "goes
// away" by stopping a TCP forwarder in front of it that admin_control_url points at.
import { createServer, connect, type Server, type Socket } from 'node:net';
import t from 'tap';
import { loadConfig } from '../../proxy/config.js';
import { createLogger } from '../../proxy/logger.js';
import { startProxy } from '../../proxy/index.js';
import { installPgvpd, loginRole } from '../support/pgvpd.js';
import { createTestDatabase } from '../support/postgres.js';
import { adminFixture, request } from './admin-fixture.js';

/** A TCP forwarder to host:port that can be stopped (cutting its connections) and restarted. */
class Forwarder {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(
    private readonly host: string,
    private readonly target: number,
  ) {}

  async start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target, this.host);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => {
          this.sockets.delete(socket);
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    const address = server.address();
    this.port = typeof address === 'object' && address ? address.port : 0;
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

/** Milliseconds until `path` answers `status`, polled every 100 ms; rejects after `ms`. */
async function msUntil(base: string, path: string, status: number, ms: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    const answer = await request(base, path);
    if (answer.status === status) return Date.now() - start;
    if (Date.now() - start > ms) {
      throw new Error(`${path} still ${String(answer.status)} after ${String(ms)} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

t.test('readyz follows the control database; healthz never asks it', async (t) => {
  const db = await createTestDatabase(t);
  await installPgvpd(db);
  const role = await loginRole(t, db, 'proxy');
  await db.query(`grant pgvpd_api to ${role.name}`);
  const forwarder = new Forwarder(db.server.host, db.server.port);
  await forwarder.start();
  t.teardown(() => forwarder.stop());
  const url = new URL(role.url);
  url.host = `127.0.0.1:${String(forwarder.port)}`;
  const config = loadConfig({
    flags: {
      port: 0,
      upstream_host: db.server.host,
      upstream_port: db.server.port,
      control_url: role.url,
      admin_port: 0,
      admin_control_url: url.toString(),
      log_level: 'silent',
    },
  });
  const proxy = await startProxy(config, { logger: createLogger('silent') });
  t.teardown(() => proxy.close(1));
  const base = proxy.adminUrl!;
  const { rows } = await db.query<{ token: string }>(
    `select token from pgvpd.token_create('operator')`,
  );
  const token = rows[0]!.token;

  await msUntil(base, '/readyz', 200, 3000);
  const ready = await request(base, '/readyz');
  t.equal(
    ready.text,
    '{"status":"ready","checks":{"listener":"ok","control":"ok","catalog":"ok"}}',
  );

  await forwarder.stop();
  t.ok((await msUntil(base, '/readyz', 503, 3000)) <= 3000, '503 within 3 s of the database going');
  const down = await request(base, '/readyz');
  t.equal(
    down.text,
    '{"status":"not_ready","checks":{"listener":"ok","control":"failing","catalog":"ok"}}',
  );
  const health = await request(base, '/healthz');
  t.equal(health.status, 200, 'healthz is 200 without the database');
  t.equal(health.text, '{"status":"ok"}');
  for (const path of ['/api/v1/status', '/metrics']) {
    const answer = await request(base, path, { token });
    t.equal(answer.status, 503, `${path}: 503 without the database`);
    t.equal(answer.headers.get('retry-after'), '1');
    t.equal(
      answer.text,
      '{"error":"unavailable","message":"the database is unavailable; retry shortly"}',
    );
  }

  await forwarder.start();
  t.ok((await msUntil(base, '/readyz', 200, 3000)) <= 3000, '200 within 3 s of its return');
  const status = await request(base, '/api/v1/status', { token });
  t.equal(status.status, 200, 'and the API answers again');
});

t.test('readyz is 503 "draining" once close() begins', async (t) => {
  const f = await adminFixture(t);
  await msUntil(f.base, '/readyz', 200, 3000);
  const alice = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
  const closing = f.proxy.close(10);
  const draining = await request(f.base, '/readyz');
  t.equal(draining.status, 503);
  t.equal(
    draining.text,
    '{"status":"draining","checks":{"listener":"failing","control":"ok","catalog":"ok"}}',
  );
  const status = await request(f.base, '/api/v1/status', { token: await f.token('operator') });
  t.match(status.json, { draining: true, sessions: { total: 1 } });
  await alice.end();
  await closing;
  await t.rejects(request(f.base, '/healthz'), 'the HTTP server is closed at the end');
});
