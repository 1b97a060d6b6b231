// Transaction pooling, session residue (issue 14, A9.7): whatever session state one org leaves
// on a shared backend — a temp table named like a real table, a WITH HOLD cursor, LISTEN, a SQL
// prepared statement, a session advisory lock, search_path, SET ROLE — is gone before the next
// org's first statement runs there: the other org reads the real table, cannot fetch the cursor,
// hears nothing, cannot EXECUTE, takes the lock, and has the default search_path and role. And
// with the fix lint's transaction_pool_temp names, a transaction-pooled connect_as role cannot
// create a temp table at all.
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { waitFor } from './clients-support.js';
import { failure, openClient } from './org-support.js';
import { seenIn, txOrgs, view } from './tx-fixture.js';

const x = await txOrgs(t, { pool_size: 1 });

/** A NOLOGIN role the connect_as role may SET ROLE to (a member of it, nothing else). */
const other = `pgvpd_tx_other_${randomBytes(4).toString('hex')}`;
await x.db.query(`create role ${other} nologin`);
await x.db.query(`grant ${other} to ${x.f.connectAs}`);
t.teardown(async () => {
  await x.db.query(`revoke ${other} from ${x.f.connectAs}`).catch(() => undefined);
  await x.db.query(`drop role if exists ${other}`).catch(() => undefined);
});

const bodies = async (client: pg.Client, sql: string): Promise<string[]> =>
  (await client.query<{ rows: string[] | null }>(sql)).rows[0]!.rows ?? [];

t.test('session state one org leaves on a backend never reaches the other org', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  const heard: string[] = [];
  beta.on('notification', (n) => heard.push(`${n.channel}: ${n.payload ?? ''}`));

  // acme's residue, each statement a transaction of its own.
  const pid = (await view(acme)).pid;
  await acme.query('create temp table docs (id int, org_id uuid, body text)');
  await acme.query("insert into docs values (0, null, 'temp-a')");
  await acme.query('declare c cursor with hold for select body from public.docs order by body');
  await acme.query('listen x');
  await acme.query('prepare q as select 1 as one');
  await acme.query('select pg_advisory_lock(1)');
  await acme.query('set search_path = pgvpd, public');
  const residue = (
    await acme.query<{
      pid: number;
      temp: string[];
      cursor: string[];
      channels: string[];
      prepared: string[];
      locks: number;
      path: string;
    }>(
      `select pg_backend_pid() as pid,
              (select array_agg(body) from pg_temp.docs) as temp,
              (select array_agg(name::text) from pg_cursors) as cursor,
              (select array_agg(c) from pg_listening_channels() c) as channels,
              (select array_agg(name) from pg_prepared_statements where from_sql) as prepared,
              (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks,
              current_setting('search_path') as path`,
    )
  ).rows[0]!;
  await acme.query(`set role ${other}`);
  const role = (await acme.query<{ role: string }>('select current_user as role')).rows[0]!.role;
  t.same(
    { ...residue, role },
    {
      pid,
      temp: ['temp-a'],
      cursor: ['c'],
      channels: ['x'],
      prepared: ['q'],
      locks: 1,
      path: 'pgvpd, public',
      role: other,
    },
    'acme really left all of it on its backend',
  );

  const first = await view(beta);
  t.equal(first.pid, pid, 'beta’s next transaction runs on the same backend');
  t.same(seenIn(first), x.expected('beta'), 'beta sees its own tenant and rows');
  t.same(
    await bodies(beta, 'select array_agg(body order by body) as rows from docs'),
    ['b1', 'b2', 'b3'],
    'an unqualified docs is the real table, not acme’s temp table',
  );
  const cursor = await failure(beta.query('fetch 1 from c'));
  t.same(
    { code: cursor.code, message: cursor.message },
    { code: '34000', message: 'cursor "c" does not exist' },
    'beta cannot fetch acme’s WITH HOLD cursor',
  );
  const execute = await failure(beta.query('execute q'));
  t.same(
    { code: execute.code, message: execute.message },
    { code: '26000', message: 'prepared statement "q" does not exist' },
    'beta cannot EXECUTE acme’s prepared statement',
  );
  const state = (
    await beta.query<{
      pid: number;
      lock: boolean;
      channels: string[] | null;
      path: string;
      role: string;
      session: string;
    }>(
      `select pg_backend_pid() as pid, pg_try_advisory_lock(1) as lock,
              (select array_agg(c) from pg_listening_channels() c) as channels,
              current_setting('search_path') as path, current_user as role, session_user as session`,
    )
  ).rows[0]!;
  t.same(
    state,
    {
      pid,
      lock: true,
      channels: null,
      path: '"$user", public',
      role: x.f.connectAs,
      session: x.f.connectAs,
    },
    'beta takes lock 1, listens to nothing, and has the default search_path and role',
  );
  await beta.query('select pg_advisory_unlock(1)');

  await x.db.query("notify x, 'from the admin'");
  const after = await view(beta);
  t.equal(after.pid, pid, 'the backend was not discarded for a notification while idle');
  t.same(seenIn(after), x.expected('beta'), 'beta still sees beta');
  t.same(heard, [], 'beta got no notification on channel x');
});

t.test(
  'with TEMPORARY revoked as lint says, a transaction-pooled role cannot create a temp table',
  async (t) => {
    const y = await txOrgs(t, { pool_size: 1 });
    await y.db.query(`select pgvpd.org_set_pool_mode($1, 'transaction')`, [y.f.orgs.acme]);
    const fixes = async () =>
      (
        await y.db.query<{ fix: string }>(
          "select fix from pgvpd.lint() where check_name = 'transaction_pool_temp'",
        )
      ).rows.map((r) => r.fix);
    const [fix] = await fixes();
    t.equal(
      fix,
      `revoke temporary on database ${y.db.name} from ${y.f.connectAs}; revoke temporary on database ${y.db.name} from public`,
      'lint names the connect_as role and the fix',
    );
    await y.db.query(fix!);
    t.same(await fixes(), [], 'lint is satisfied');
    const acme = await y.client(t, 'acme');
    const refused = await failure(acme.query('create temp table docs (id int)'));
    t.same(
      { code: refused.code, message: refused.message },
      {
        code: '42501',
        message: `permission denied to create temporary tables in database "${y.db.name}"`,
      },
      'CREATE TEMP TABLE is refused',
    );
    t.same(seenIn(await view(acme)), y.expected('acme'), 'and the client goes on, seeing acme');
  },
);

t.test('settings one org SETs for its session do not reach the other', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  const pid = (await view(acme)).pid;
  await acme.query("set statement_timeout = '1ms'");
  await acme.query('set default_transaction_read_only = on');
  await acme.query("set work_mem = '64kB'");
  const b = await beta.query<{ pid: number; timeout: string; ro: string; mem: string }>(
    `select pg_backend_pid() as pid, current_setting('statement_timeout') as timeout,
            current_setting('default_transaction_read_only') as ro,
            current_setting('work_mem') as mem, pg_sleep(0.05)`,
  );
  t.same(
    b.rows[0],
    { pid, timeout: '0', ro: 'off', mem: '4MB', pg_sleep: '' },
    'beta on the same backend runs with the defaults, and its 50 ms sleep is not cut short',
  );
  await beta.query(
    "insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'b-write')",
  );
  t.pass('beta may write');
  await x.db.query("delete from public.docs where body = 'b-write'");
});

t.test('a temp table of one user is not another user’s of the same org', async (t) => {
  await x.db.query('select pgvpd.user_add($1, $2, $3, $4)', [
    x.f.orgs.acme,
    'bob',
    makeVerifier('bob-at-acme'),
    x.f.connectAs,
  ]);
  // The proxy learns of bob by the catalog's NOTIFY and a reload: not at once.
  t.ok(
    await waitFor(() => x.f.proxy.runtime.org?.catalog.user(x.f.orgs.acme, 'bob') !== undefined),
    'the proxy’s catalog has bob',
  );
  const alice = await x.client(t, 'acme');
  const bob = await openClient(t, { ...x.login('acme'), user: 'bob', password: 'bob-at-acme' });
  const pid = (await view(alice)).pid;
  await alice.query("create temp table docs as select 'alice-temp'::text as body");
  t.same(
    await bodies(alice, 'select array_agg(body) as rows from docs'),
    ['alice-temp'],
    'alice reads her temp table',
  );
  const b = await view(bob);
  t.same(
    [b.pid, seenIn(b)],
    [pid, x.expected('acme')],
    'bob, on the same backend, sees acme’s rows',
  );
  t.same(
    await bodies(bob, 'select array_agg(body order by body) as rows from docs'),
    ['a1', 'a2'],
    'and an unqualified docs is the real table',
  );
});

t.test('one org’s protocol-level prepared statements are not visible to the other', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  const pid = (await view(acme)).pid;
  await acme.query({
    name: 'secret',
    text: "select 'acme-secret-literal' as s, $1::int as n",
    values: [1],
  });
  t.same(
    (
      await acme.query<{ n: number }>(
        "select count(*)::int as n from pg_prepared_statements where statement like '%acme-secret-literal%'",
      )
    ).rows[0]!.n,
    1,
    'acme’s statement is on the backend while acme holds it',
  );
  const seen = (
    await beta.query<{ pid: number; statements: string[] | null }>(
      'select pg_backend_pid() as pid, (select array_agg(statement) from pg_prepared_statements) as statements',
    )
  ).rows[0]!;
  t.equal(seen.pid, pid, 'beta runs on the same backend');
  t.same(seen.statements, null, 'beta sees no prepared statement of acme’s');
  const again = await acme.query<{ s: string; n: number }>({
    name: 'secret',
    text: "select 'acme-secret-literal' as s, $1::int as n",
    values: [2],
  });
  t.same(again.rows, [{ s: 'acme-secret-literal', n: 2 }], 'acme’s statement is replayed for acme');
});
