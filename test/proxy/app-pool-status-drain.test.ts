// Pooled app mode (issue 15) seen by an operator, in session and in transaction mode: GET
// /api/v1/status (admin_port) reports the pool mode, the pool's totals and its one key
// (database, app role) and the proxy's registration; /metrics has the pgvpd_pool_* series of the
// app pool, counted exactly, with no database, role or tenant name in them. A drain
// (proxy.close(grace)) lets a client that leaves within the grace go and then ends early; after
// the grace a client holding a backend (session mode's loan, transaction mode's open
// transaction) reads PostgreSQL's own FATAL 57P01, a transaction-mode client between its
// transactions the proxy's 57P01; the pool's backends are ended, and no session is left.
import type pg from 'pg';
import t from 'tap';
import { backendPid } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { request } from '../admin/admin-fixture.js';
import { waitFor } from './clients-support.js';
import { proxyFixture, visible, type ProxyFixture } from './fixture.js';

const modes = ['session', 'transaction'] as const;
type Mode = (typeof modes)[number];

interface AdminPooled extends ProxyFixture {
  base: string;
  token(scope: 'operator' | 'metrics'): Promise<string>;
}

/** A pooled app-mode proxy with the control plane on; its control login may use the API. */
async function adminPooled(t: TestLike, mode: Mode): Promise<AdminPooled> {
  const f = await proxyFixture(t, { pool_mode: mode, pool_size: 2, admin_port: 0 });
  await f.db.query(`grant pgvpd_api to ${f.proxyRole.name}`);
  const base = f.proxy.adminUrl;
  if (base === undefined) throw new Error('the admin server did not start');
  return {
    ...f,
    base,
    async token(scope) {
      const { rows } = await f.db.query<{ token: string }>(
        'select token from pgvpd.token_create($1)',
        [scope],
      );
      return rows[0]!.token;
    },
  };
}

/** The value of one series, `name{labels}` exactly as rendered; undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

interface StatusBody {
  mode: string;
  draining: boolean;
  sessions: { total: number; by_phase: Record<string, number> };
  pool_mode: string | null;
  pool: {
    idle: number;
    busy: number;
    opened: number;
    timeouts: number;
    keys: { server: string; database: string; role: string; idle: number; busy: number }[];
  } | null;
  catalog: unknown;
  instances: { server: string | null; database: string }[] | null;
}

for (const mode of modes) {
  t.test(`${mode} mode: /api/v1/status and /metrics report the app pool`, async (t) => {
    const f = await adminPooled(t, mode);
    const acme = await f.connect(f.userFor('acme'));
    const globex = await f.connect(f.userFor('globex'));
    // Both at once: session mode lends two backends, transaction mode links one per transaction.
    await acme.query('begin');
    await globex.query('begin');
    t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
    t.same(await visible(globex), { acme: 0, globex: 3, total: 3 });

    const answer = await request(f.base, '/api/v1/status', { token: await f.token('operator') });
    t.equal(answer.status, 200);
    const body = answer.json as StatusBody;
    t.same(
      {
        mode: body.mode,
        draining: body.draining,
        sessions: body.sessions,
        pool_mode: body.pool_mode,
        catalog: body.catalog,
      },
      {
        mode: 'app',
        draining: false,
        sessions: { total: 2, by_phase: { pipe: 2 } },
        pool_mode: mode,
        catalog: null,
      },
    );
    t.match(
      body.pool,
      {
        idle: 0,
        busy: 2,
        opened: 2,
        timeouts: 0,
        keys: [
          {
            server: `${f.db.server.host}:${String(f.db.server.port)}`,
            database: f.db.name,
            role: f.app.name,
            idle: 0,
            busy: 2,
          },
        ],
      },
      'the pool: one key (database, app role), two busy sessions',
    );
    t.equal(body.pool?.keys.length, 1, 'one key');
    t.match(
      body.instances,
      [{ server: null, database: f.db.name }],
      'the proxy registered in the database (switch grants)',
    );
    t.equal(body.instances?.length, 1);

    const metrics = await request(f.base, '/metrics', { token: await f.token('metrics') });
    t.equal(metrics.status, 200);
    const text = metrics.text;
    const expected: [string, number][] = [
      ['pgvpd_client_sessions{mode="app",phase="pipe"}', 2],
      ['pgvpd_handshake_duration_seconds_count{mode="app",outcome="ok"}', 2],
      ['pgvpd_pool_sessions{state="busy"}', 2],
      ['pgvpd_pool_sessions{state="idle"}', 0],
      ['pgvpd_pool_sessions_opened_total', 2],
      ['pgvpd_pool_keys', 1],
      ['pgvpd_pool_waiting_clients', 0],
      ['pgvpd_instance_registrations_total{result="ok"}', 1],
    ];
    for (const [series, n] of expected) t.equal(value(text, series), n, series);
    t.ok(
      (value(text, 'pgvpd_pool_checkout_duration_seconds_count') ?? 0) >= 2,
      'pgvpd_pool_checkout_duration_seconds_count: a checkout per login at least',
    );
    if (mode === 'transaction')
      t.ok((value(text, 'pgvpd_pool_transactions_total') ?? 0) >= 2, 'transactions counted');
    else t.equal(value(text, 'pgvpd_pool_transactions_total'), 0, 'no transaction pooling');
    for (const name of [f.db.name, f.app.name, f.userFor('acme'), 'globex']) {
      t.notOk(text.includes(name), `${name} is nowhere in the metrics`);
    }
    await acme.query('commit');
    await globex.query('commit');
  });
}

/** The error a client gets when its connection is ended; undefined if none within 10 s. */
function endedWith(client: pg.Client): Promise<{ code?: string; message: string } | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      resolve(undefined);
    }, 10_000);
    client.on('error', (error: Error & { code?: string }) => {
      clearTimeout(timer);
      resolve({ code: error.code, message: error.message });
    });
  });
}

/** Backends of the app role left in the test database. */
async function appBackends(f: ProxyFixture): Promise<number> {
  const { rows } = await f.db.query<{ n: number }>(
    'select count(*)::int as n from pg_stat_activity where datname = $1 and usename = $2',
    [f.db.name, f.app.name],
  );
  return rows[0]!.n;
}

const adminShutdown = {
  code: '57P01',
  message: 'terminating connection due to administrator command',
};

t.test('session mode: a drain ends a lent backend with PostgreSQL’s 57P01', async (t) => {
  const f = await proxyFixture(t, { pool_mode: 'session', pool_size: 2 });
  const held = await f.connect(f.userFor('acme'));
  const pid = await backendPid(held);
  const leaving = await f.connect(f.userFor('globex'));
  t.same(await visible(leaving), { acme: 0, globex: 3, total: 3 });
  const ended = endedWith(held);

  const started = Date.now();
  const closing = f.proxy.close(2);
  await leaving.end();
  t.same(await ended, adminShutdown, 'the client holding its backend read PostgreSQL’s FATAL');
  t.ok(Date.now() - started >= 1900, 'not before the grace of 2 s');
  await closing;
  t.equal(f.proxy.sessionCount(), 0, 'no session is left');
  t.ok(
    await waitFor(async () => (await appBackends(f)) === 0),
    `the pool’s backends are ended (${String(pid)} among them)`,
  );
});

t.test(
  'transaction mode: a drain ends a client in a transaction with PostgreSQL’s 57P01, one between transactions with the proxy’s',
  async (t) => {
    const f = await proxyFixture(t, { pool_mode: 'transaction', pool_size: 2 });
    const inTransaction = await f.connect(f.userFor('acme'));
    const between = await f.connect(f.userFor('globex'));
    t.same(await visible(between), { acme: 0, globex: 3, total: 3 });
    await inTransaction.query('begin');
    t.same(await visible(inTransaction), { acme: 2, globex: 0, total: 2 });
    const endedIn = endedWith(inTransaction);
    const endedBetween = endedWith(between);

    const started = Date.now();
    await f.proxy.close(1);
    t.ok(Date.now() - started >= 900, 'not before the grace of 1 s');
    t.same(await endedIn, adminShutdown, 'in a transaction: PostgreSQL’s FATAL');
    t.same(
      await endedBetween,
      { code: '57P01', message: 'terminating connection because the pgvpd proxy is shutting down' },
      'between transactions: the proxy’s FATAL',
    );
    t.equal(f.proxy.sessionCount(), 0, 'no session is left');
    t.ok(await waitFor(async () => (await appBackends(f)) === 0), 'the pool’s backends are ended');
  },
);

for (const mode of modes) {
  t.test(`${mode} mode: a drain ends as soon as the last client leaves`, async (t) => {
    const f = await adminPooled(t, mode);
    const client = await f.connect(f.userFor('acme'));
    t.same(await visible(client), { acme: 2, globex: 0, total: 2 });
    const started = Date.now();
    const closing = f.proxy.close(30);
    const status = await request(f.base, '/api/v1/status', { token: await f.token('operator') });
    t.match(
      status.json,
      { draining: true, pool_mode: mode, sessions: { total: 1 } },
      'the status says draining, with the client still there',
    );
    t.equal(
      await f
        .connect(f.userFor('globex'))
        .then(() => 'served')
        .catch((error: unknown) => (error as { code?: string }).code),
      'ECONNREFUSED',
      'no new client while draining',
    );
    t.same(await visible(client), { acme: 2, globex: 0, total: 2 }, 'the client goes on');
    await client.end();
    await closing;
    t.ok(Date.now() - started < 10_000, 'long before the 30 s grace');
    t.equal(f.proxy.sessionCount(), 0);
    t.ok(await waitFor(async () => (await appBackends(f)) === 0), 'the pool’s backends are ended');
  });
}
