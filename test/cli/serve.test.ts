// pgvpd serve as a real process: settings from flags and environment, a tenant served, and the
// drain on SIGTERM (stop accepting, wait shutdown_timeout, then PostgreSQL's own FATAL 57P01).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { fixture } from '../sql/fixture.js';
import { loginRole } from '../support/pgvpd.js';
import { probePort, spawnCli } from './spawn-cli.js';

const base = await fixture(t);
const proxyRole = await loginRole(t, base.db, 'proxy');

function serve(extra: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const cli = spawnCli(
    ['serve', '--port', '0', '--control-url', proxyRole.url, '--log-level', 'warn', ...extra],
    {
      PGVPD_UPSTREAM_HOST: base.db.server.host,
      PGVPD_UPSTREAM_PORT: String(base.db.server.port),
      ...env,
    },
  );
  t.teardown(() => cli.child.kill('SIGKILL'));
  return cli;
}

async function listeningPort(cli: ReturnType<typeof spawnCli>): Promise<number> {
  const match = await cli.waitFor(/pgvpd proxy listening on [^:]+:(\d+)/);
  return Number(match[1]);
}

async function tenantClient(port: number, tenant: string): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    database: base.db.name,
    user: `${base.app.name}.${tenant}`,
    password: base.app.password,
  });
  await client.connect();
  return client;
}

t.test(
  'serve takes the upstream from PGVPD_* and flags, and serves each tenant its rows',
  async (t) => {
    const cli = serve();
    const port = await listeningPort(cli);
    const client = await tenantClient(port, 'b');
    client.on('error', () => undefined);
    t.same(await base.visible(client), { a: 0, b: 3, total: 3 });
    await client.end();
    cli.child.kill('SIGTERM');
    t.same(await cli.exited, { code: 0, signal: null }, 'an idle proxy exits 0 on SIGTERM');
  },
);

t.test(
  'SIGTERM drains: new connections are refused, an open session ends with 57P01',
  async (t) => {
    const cli = serve(['--shutdown-timeout', '1']);
    const port = await listeningPort(cli);
    const client = await tenantClient(port, 'a');
    // The first error is the server's FATAL; pg reports the closed socket after it.
    const ended = new Promise<{ code?: string }>((resolve) => {
      client.on('error', (error: Error & { code?: string }) => {
        resolve(error);
      });
    });
    t.same(await base.visible(client), { a: 2, b: 0, total: 2 });
    const started = Date.now();
    cli.child.kill('SIGTERM');
    await cli.waitFor(/SIGTERM: draining/);
    const refused = await probePort(port);
    t.equal(refused, 'ECONNREFUSED', 'the listener is closed while draining');
    t.equal((await ended).code, '57P01', 'the session ends with admin shutdown');
    t.ok(Date.now() - started >= 900, 'not before shutdown_timeout');
    t.same(await cli.exited, { code: 0, signal: null });
  },
);

t.test('a bad setting stops serve with exit code 1 and names the key and its source', async (t) => {
  const cli = serve([], { PGVPD_UPSTREAM_PORT: 'seventy' });
  t.same(await cli.exited, { code: 1, signal: null });
  t.match(
    cli.stderr(),
    'error: environment PGVPD_UPSTREAM_PORT: upstream_port must be a port number, got "seventy"',
  );
});

t.test('an unknown key in the config file is named with the file', async (t) => {
  const file = join(mkdtempSync(join(tmpdir(), 'pgvpd-conf-')), 'pgvpd.conf');
  writeFileSync(file, 'port = 0\nupstream_prot = 5432\n');
  const cli = serve(['--config', file]);
  t.same(await cli.exited, { code: 1, signal: null });
  t.match(cli.stderr(), `error: config file ${file}: unknown setting "upstream_prot"`);
});
