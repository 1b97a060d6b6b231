// Pooled app mode (issue 15) across a restart of its PostgreSQL, in session and in transaction
// mode, on a cluster of this file's own (test/support/second-cluster.ts, restarted with pg_ctl
// restart -m fast): a client holding a backend reads PostgreSQL's FATAL 57P01 through the proxy,
// the pool drops its broken backends (idle and lent), and a new client is served, on a new
// backend, within 2 s of the server being back; in transaction mode a client that was between
// its transactions goes on as if nothing happened.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import t from 'tap';
import { backendPid, connect, contextPath, setupSqlPath } from '../support/pgvpd.js';
import { withDatabase, type TestDatabase, type TestLike } from '../support/postgres.js';
import { secondCluster } from '../support/second-cluster.js';
import { restartLocal, type ServerState } from '../support/server.js';
import { proxyFixture, visible } from './fixture.js';
import { resetDone } from './org-support.js';

const preload = process.env.PGVPD_TEST_PRELOAD ?? '';
const cluster = await secondCluster(t, preload);

/**
 * A database on the cluster, set up as proxyFixture sets up its own: pgvpd installed, the notes
 * of acme (2) and globex (3), protected. Its superuser pool survives the restart (a connection
 * the restart ended is replaced at the next query).
 */
async function databaseOn(t: TestLike, state: ServerState, name: string): Promise<TestDatabase> {
  const admin = await connect(state.adminUrl);
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = withDatabase(state.adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => undefined);
  t.teardown(() => pool.end());
  const db: TestDatabase = {
    name,
    url,
    urlFor: (user, password) => withDatabase(state.adminUrl, name, user, password),
    query: (sql, params) => pool.query(sql, params),
    server: {
      kind: state.kind,
      host: state.host,
      port: state.port,
      version: state.version,
      tls: undefined,
    },
  };
  await db.query(readFileSync(setupSqlPath, 'utf8'));
  await db.query(`
    create table public.notes (id serial primary key, tenant_id text not null, body text);
    insert into public.notes (tenant_id, body)
      values ('acme', 'a1'), ('acme', 'a2'), ('globex', 'g1'), ('globex', 'g2'), ('globex', 'g3');
    select pgvpd.protect('public.notes');
  `);
  return db;
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

const adminShutdown = {
  code: '57P01',
  message: 'terminating connection due to administrator command',
};

for (const mode of ['session', 'transaction'] as const) {
  t.test(
    `${mode} mode: after an upstream restart the broken backends are dropped and a new client is served within 2 s`,
    async (t) => {
      const db = await databaseOn(t, cluster, `app_restart_${mode}`);
      const f = await proxyFixture(
        t,
        { pool_mode: mode, pool_size: 2, pool_checkout_timeout: 5 },
        { db },
      );
      t.equal(
        await contextPath(db),
        preload === 'pgvpd_guard' ? 'guard' : 'sql',
        'the context path of the run (PGVPD_TEST_PRELOAD)',
      );
      const pool = f.proxy.runtime.pooling!.pool;
      const acme = await f.connect(f.userFor('acme'));
      const globex = await f.connect(f.userFor('globex'));
      // Both at once, so that the pool has two backends: one to be idle, one held.
      await acme.query('begin');
      await globex.query('begin');
      const old = [await backendPid(acme), await backendPid(globex)];
      t.not(old[0], old[1], 'two backends');
      await acme.query('commit');
      if (mode === 'session') {
        // acme leaves: its backend goes back to the pool, idle; globex keeps its loan.
        await acme.end();
        t.ok(await resetDone(db, old[0]!), 'acme’s backend is idle in the pool');
      }
      t.same(await visible(globex), { acme: 0, globex: 3, total: 3 });
      const before = pool.stats();
      t.same([before.opened, before.closed], [2, 0]);
      const globexEnded = endedWith(globex);

      restartLocal(cluster, preload);
      const started = Date.now();
      const next = await f.connect(f.userFor('acme'));
      t.same(await visible(next), { acme: 2, globex: 0, total: 2 }, 'a new client is served');
      const elapsed = Date.now() - started;
      t.ok(elapsed < 2000, `within 2 s of the restart (${String(elapsed)} ms)`);
      const pid = await backendPid(next);
      t.notOk(old.includes(pid), 'on a new backend');

      t.same(
        await globexEnded,
        adminShutdown,
        'the client holding a backend read PostgreSQL’s 57P01',
      );
      if (mode === 'transaction') {
        // Between its transactions acme held no backend: the restart is not its business.
        t.same(await visible(acme), { acme: 2, globex: 0, total: 2 }, 'acme goes on');
      }
      const after = pool.stats();
      t.ok(after.closed >= 2, `both old backends were dropped (${String(after.closed)} closed)`);
      const { rows } = await db.query<{ pid: number }>(
        'select pid from pg_stat_activity where datname = $1 and usename = $2',
        [db.name, f.app.name],
      );
      t.notOk(
        rows.some((row) => old.includes(row.pid)),
        'none of the old backends is alive (the restart ended them)',
      );
      t.equal(after.opened - after.closed, after.idle + after.busy, 'the books add up');
    },
  );
}
