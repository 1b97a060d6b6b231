// pgvpd serve --mode org as a real process: an org user gets its org's rows through a pooled
// session, and SIGTERM drains (the listener closes, a lent pooled session is ended by PostgreSQL
// with FATAL 57P01 after shutdown_timeout, the process exits 0 and leaves no upstream session).
// The catalog, roles and rows are org-fixture's; its in-process proxy is not used here.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { waitFor } from '../proxy/clients-support.js';
import { orgFixture } from '../proxy/org-fixture.js';
import { probePort, spawnCli } from './spawn-cli.js';

const f = await orgFixture(t);
const passfile = join(mkdtempSync(join(tmpdir(), 'pgvpd-serve-org-')), 'passfile');
writeFileSync(passfile, `*:*:*:${f.connectAs}:${f.connectAsPassword}\n`, { mode: 0o600 });

function serveOrg(extra: string[], env: NodeJS.ProcessEnv = {}, withPassfile = true) {
  const cli = spawnCli(
    [
      'serve',
      '--mode',
      'org',
      '--port',
      '0',
      '--control-url',
      f.proxyRole.url,
      ...(withPassfile ? ['--connect-as-passfile', passfile] : []),
      '--log-level',
      'warn',
      ...extra,
    ],
    {
      PGVPD_UPSTREAM_HOST: f.db.server.host,
      PGVPD_UPSTREAM_PORT: String(f.db.server.port),
      ...env,
    },
  );
  t.teardown(() => cli.child.kill('SIGKILL'));
  return cli;
}

async function listeningPort(cli: ReturnType<typeof spawnCli>): Promise<number> {
  return Number((await cli.waitFor(/pgvpd proxy listening on [^:]+:(\d+)/))[1]);
}

function aliceOfAcme(port: number): pg.Client {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    database: 'acme-analytics',
    user: 'alice',
    password: 'alice-at-acme',
  });
  client.on('error', () => undefined);
  return client;
}

async function upstreamSessions(): Promise<number> {
  const { rows } = await f.db.query<{ n: number }>(
    'select count(*)::int as n from pg_stat_activity where usename = $1',
    [f.connectAs],
  );
  return rows[0]!.n;
}

t.test('SIGTERM drains org mode: 57P01 for a lent session, exit 0, no session left', async (t) => {
  const cli = serveOrg(['--shutdown-timeout', '1']);
  const port = await listeningPort(cli);
  const client = aliceOfAcme(port);
  // The first error is PostgreSQL's FATAL; pg reports the closed socket after it.
  const ended = new Promise<{ code?: string }>((resolve) => {
    client.on('error', (error: Error & { code?: string }) => {
      resolve(error);
    });
  });
  await client.connect();
  const { rows } = await client.query<{ tenant: string; bodies: string[] }>(
    'select pgvpd.current_tenant_id() as tenant, array_agg(body order by body) as bodies from public.docs',
  );
  t.same(rows, [{ tenant: f.orgs.acme, bodies: ['a1', 'a2'] }], "alice sees Acme's rows only");
  t.equal(await upstreamSessions(), 1, 'one pooled upstream session');

  const started = Date.now();
  cli.child.kill('SIGTERM');
  await cli.waitFor(/SIGTERM: draining/);
  const refused = await probePort(port);
  t.equal(refused, 'ECONNREFUSED', 'the listener is closed while draining');
  t.equal((await ended).code, '57P01', "the lent session ends with PostgreSQL's admin shutdown");
  t.ok(Date.now() - started >= 900, 'not before shutdown_timeout');
  t.same(await cli.exited, { code: 0, signal: null });
  t.ok(
    await waitFor(async () => (await upstreamSessions()) === 0, 5000),
    'no upstream session of the connect_as role is left',
  );
});

t.test('connect_as passwords from PGVPD_CONNECT_AS_PASSWORDS, without a passfile', async (t) => {
  const cli = serveOrg(
    [],
    // pgpass lines: one that does not match first, then the role's, with an escaped colon
    // elsewhere to show the format is pgpass's.
    {
      PGVPD_CONNECT_AS_PASSWORDS: `*:*:*:someone\\:else:x\n*:*:*:${f.connectAs}:${f.connectAsPassword}`,
    },
    false,
  );
  const client = aliceOfAcme(await listeningPort(cli));
  await client.connect();
  const { rows } = await client.query<{ tenant: string }>(
    'select pgvpd.current_tenant_id() as tenant',
  );
  t.same(rows, [{ tenant: f.orgs.acme }]);
  await client.end();
});

t.test(
  'with no password for the connect_as role anywhere, the client gets 28P01 saying so',
  async (t) => {
    const cli = serveOrg([], {}, false);
    const client = aliceOfAcme(await listeningPort(cli));
    const error = await client.connect().then(
      () => undefined,
      (e: unknown) => e as { severity?: string; code?: string; message?: string; hint?: string },
    );
    t.same(
      { severity: error?.severity, code: error?.code, message: error?.message, hint: error?.hint },
      {
        severity: 'FATAL',
        code: '28P01',
        message: `upstream asked for SCRAM-SHA-256 authentication of role "${f.connectAs}", and no password is configured for it`,
        hint: 'Add the role to connect_as_passfile or to PGVPD_CONNECT_AS_PASSWORDS.',
      },
    );
  },
);
