// Pooled app mode (issue 15) in operation, in session and in transaction mode, with pool_size 1
// and pool_checkout_timeout 1 s: a bypass user (superuser_bypass, from bypass_networks) keeps a
// backend of its own, authenticated by PostgreSQL, while the pool's only backend is held, and the
// pool never opens a session of its role; from outside bypass_networks it is refused. A client
// that finds the pool exhausted gets the pool's FATAL 53300 after the timeout (at login, and in
// transaction mode also for a statement while another client's transaction holds the backend),
// and the holder goes on. A cancel through the pool stops the client's pg_sleep with 57014,
// wrong keys cancel nothing, and in transaction mode a late cancel reaches no other tenant.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import t from 'tap';
import { backendPid, sqlstate } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { backendKey, sendCancelRequest, waitFor } from './clients-support.js';
import { proxyFixture, visible, type ProxyFixture } from './fixture.js';
import { failure, pause, type Failure } from './org-support.js';

const modes = ['session', 'transaction'] as const;
type Mode = (typeof modes)[number];

function pooledFixture(
  t: TestLike,
  mode: Mode,
  overrides: Record<string, unknown> = {},
): Promise<ProxyFixture> {
  return proxyFixture(t, { pool_mode: mode, pool_size: 1, pool_checkout_timeout: 1, ...overrides });
}

const refused = (user: string): Failure => ({
  severity: 'FATAL',
  code: '28P01',
  message: `password authentication failed for user "${user}"`,
  hint: undefined,
});

/** poolErrors.exhausted for the fixture's role and database, size 1, 1 s. */
const exhausted = (f: ProxyFixture): Failure => ({
  severity: 'FATAL',
  code: '53300',
  message: `pool for role "${f.app.name}" on database "${f.db.name}" is exhausted (size 1); timed out after 1000 ms`,
  hint: 'Raise pool_size, or pool_checkout_timeout if sessions are short.',
});

/** The backend pids of `role` in the test database. */
async function pidsOf(f: ProxyFixture, role: string): Promise<number[]> {
  const { rows } = await f.db.query<{ pid: number }>(
    'select pid from pg_stat_activity where datname = $1 and usename = $2 order by pid',
    [f.db.name, role],
  );
  return rows.map((row) => row.pid);
}

/** What a client sees: its backend, its role and its tenant. */
async function who(
  client: pg.Client,
): Promise<{ pid: number; user: string; tenant: string | null }> {
  const { rows } = await client.query<{ pid: number; user: string; tenant: string | null }>(
    'select pg_backend_pid() as pid, current_user as user, pgvpd.current_tenant_id() as tenant',
  );
  return rows[0]!;
}

for (const mode of modes) {
  t.test(
    `${mode} mode: a bypass user keeps a backend of its own, never a pooled one`,
    async (t) => {
      const name = `pgvpd_bypass_${randomBytes(4).toString('hex')}`;
      const password = randomBytes(9).toString('hex');
      const f = await pooledFixture(t, mode, {
        superuser_bypass: [name],
        bypass_networks: ['127.0.0.1/32'],
      });
      await f.db.query(`create role ${name} login password '${password}' bypassrls`);
      t.teardown(async () => {
        await f.db.query(`drop owned by ${name}`).catch(() => undefined);
        await f.db.query(`drop role if exists ${name}`).catch(() => undefined);
      });
      await f.db.query(`grant select on public.notes to ${name}`);

      // The pool's only backend is held: lent (session mode), in a transaction (transaction mode).
      const tenant = await f.connect(f.userFor('acme'));
      await tenant.query('begin');
      const pooled = await who(tenant);
      t.same(pooled.tenant, 'acme');
      const before = f.proxy.runtime.pooling?.pool.stats();
      t.same([before?.opened, before?.busy], [1, 1], 'one pooled session, busy');

      const started = Date.now();
      const bypass = await f.connect(name, password);
      const own = await who(bypass);
      t.ok(Date.now() - started < 900, 'served at once, not after the pool’s checkout timeout');
      t.same([own.user, own.tenant], [name, null], 'its own role, no tenant context');
      t.not(own.pid, pooled.pid, 'not the pooled backend');
      t.same(await visible(bypass), { acme: 2, globex: 3, total: 5 }, 'BYPASSRLS: every row');
      for (let i = 0; i < 3; i += 1) {
        await bypass.query('begin');
        t.equal((await who(bypass)).pid, own.pid, `transaction ${String(i + 1)}: the same backend`);
        await bypass.query('commit');
      }
      t.same(
        await pidsOf(f, f.app.name),
        [pooled.pid],
        'the pool has one backend, of the app role',
      );
      t.same(await pidsOf(f, name), [own.pid], 'the bypass user’s one backend is its own');
      const after = f.proxy.runtime.pooling?.pool.stats();
      t.same(
        { opened: after?.opened, roles: after?.keys.map((key) => key.role) },
        { opened: 1, roles: [f.app.name] },
        'the pool opened no session of the bypass role',
      );
      t.same(await visible(tenant), { acme: 2, globex: 0, total: 2 }, 'the tenant goes on');
      await tenant.query('commit');

      // PostgreSQL authenticates a bypass user: its own 28P01, relayed.
      t.same(await failure(f.connect(name, 'wrong-password')), refused(name), 'a wrong password');
      // As a tenant username the role is not an application role: the pool's mock exchange.
      t.same(
        await failure(f.connect(`${name}.acme`, password)),
        refused(name),
        'the bypass role as <role>.<tenant>: not an application role',
      );
      t.equal(f.proxy.runtime.pooling?.pool.stats().opened, 1, 'still one pooled session opened');

      // Another proxy on the same database, whose bypass_networks do not hold 127.0.0.1.
      const elsewhere = await proxyFixture(
        t,
        {
          pool_mode: mode,
          superuser_bypass: [name],
          bypass_networks: ['10.0.0.0/8'],
        },
        { db: f.db },
      );
      t.same(
        await failure(elsewhere.connect(name, password)),
        {
          severity: 'FATAL',
          code: '28000',
          message: `user "${name}" may not bypass the tenant from this address`,
          hint: 'Bypass users are served only from the client networks in bypass_networks.',
        },
        'outside bypass_networks: refused, and not served by the pool either',
      );
      t.equal(elsewhere.proxy.runtime.pooling?.pool.stats().opened, 0);
    },
  );
}

t.test('session mode: a client finding the pool exhausted gets 53300 after 1 s', async (t) => {
  const f = await pooledFixture(t, 'session');
  const first = await f.connect(f.userFor('acme'));
  const pid = await backendPid(first);
  for (const tenant of ['acme', 'globex']) {
    const started = Date.now();
    const refusal = await failure(f.connect(f.userFor(tenant)));
    const waited = Date.now() - started;
    t.same(refusal, exhausted(f), `${tenant}: the pool’s 53300`);
    t.ok(waited >= 950 && waited < 2500, `${tenant}: refused after ${String(waited)} ms`);
  }
  t.equal(f.proxy.runtime.pooling?.pool.stats().timeouts, 2, 'two checkouts timed out');
  t.same(await visible(first), { acme: 2, globex: 0, total: 2 }, 'the holder goes on');
  await first.end();
  const next = await f.connect(f.userFor('globex'));
  t.equal(await backendPid(next), pid, 'once the holder left, the next client gets its backend');
  t.same(await visible(next), { acme: 0, globex: 3, total: 3 });
});

t.test(
  'transaction mode: an open transaction holds the backend; a statement waiting for it, and a login, get 53300',
  async (t) => {
    const f = await pooledFixture(t, 'transaction');
    const holder = await f.connect(f.userFor('acme'));
    const waiter = await f.connect(f.userFor('globex'));
    t.same(await visible(waiter), { acme: 0, globex: 3, total: 3 }, 'both served in turn');
    const ended = new Promise<void>((resolve) => waiter.once('end', resolve));
    await holder.query('begin');
    t.same(await visible(holder), { acme: 2, globex: 0, total: 2 });

    let started = Date.now();
    const statement = await failure(waiter.query('select 1'));
    let waited = Date.now() - started;
    t.same(statement, exhausted(f), 'the statement: the pool’s FATAL 53300');
    t.ok(waited >= 950 && waited < 2500, `refused after ${String(waited)} ms`);
    t.ok(
      await Promise.race([ended.then(() => true), pause(5000).then(() => false)]),
      'the refused client’s connection was closed',
    );
    t.not(await sqlstate(waiter.query('select 1')), 'no error', 'and it is unusable');

    started = Date.now();
    t.same(await failure(f.connect(f.userFor('globex'))), exhausted(f), 'a login: 53300 too');
    waited = Date.now() - started;
    t.ok(waited >= 950 && waited < 2500, `refused after ${String(waited)} ms`);

    t.same(await visible(holder), { acme: 2, globex: 0, total: 2 }, 'the holder goes on');
    await holder.query('commit');
    const next = await f.connect(f.userFor('globex'));
    t.same(
      await visible(next),
      { acme: 0, globex: 3, total: 3 },
      'after COMMIT the next is served',
    );
    t.same(await visible(holder), { acme: 2, globex: 0, total: 2 });
  },
);

/** The app role's backend `pid` is inside pg_sleep. */
async function sleeping(f: ProxyFixture, pid: number): Promise<boolean> {
  const { rowCount } = await f.db.query(
    "select 1 from pg_stat_activity where pid = $1 and state = 'active' and wait_event = 'PgSleep'",
    [pid],
  );
  return rowCount === 1;
}

for (const mode of modes) {
  t.test(`${mode} mode: a cancel through the pool stops pg_sleep with 57014`, async (t) => {
    const f = await pooledFixture(t, mode);
    const acme = await f.connect(f.userFor('acme'));
    const pid = await backendPid(acme);
    const key = backendKey(acme);
    t.ok(Number.isInteger(key.processId) && key.processId !== 0, 'a BackendKeyData arrived');
    t.not(key.processId, pid, 'the client’s processID is not the backend’s pid');

    const outcome = failure(acme.query('select pg_sleep(30)')).then((fields) => ({
      fields,
      endedAt: Date.now(),
    }));
    t.ok(await waitFor(() => sleeping(f, pid)), 'the statement is running upstream');
    await sendCancelRequest(f.proxy.port, key.processId, key.secretKey ^ 1);
    await sendCancelRequest(f.proxy.port, pid, key.secretKey);
    await pause(300);
    t.ok(await sleeping(f, pid), 'a wrong key and the real pid cancelled nothing');

    const cancelAt = Date.now();
    await sendCancelRequest(f.proxy.port, key.processId, key.secretKey);
    const { fields, endedAt } = await outcome;
    t.same(
      fields,
      {
        severity: 'ERROR',
        code: '57014',
        message: 'canceling statement due to user request',
        hint: undefined,
      },
      'cancelled',
    );
    t.ok(endedAt - cancelAt < 1000, `ended ${String(endedAt - cancelAt)} ms after the cancel`);
    t.same(await who(acme), { pid, user: f.app.name, tenant: 'acme' }, 'the client goes on');

    if (mode === 'transaction') {
      // Between its transactions acme holds no backend: its key reaches no one else's statement.
      const globex = await f.connect(f.userFor('globex'));
      const slept = globex.query<{ pid: number; tenant: string }>(
        'select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant, pg_sleep(1)',
      );
      t.ok(await waitFor(() => sleeping(f, pid)), 'globex’s statement runs on the backend');
      await sendCancelRequest(f.proxy.port, key.processId, key.secretKey);
      const row = (await slept).rows[0]!;
      t.same([row.pid, row.tenant], [pid, 'globex'], 'globex’s pg_sleep ran to its end');
    }
  });
}
