// Transaction pooling, sticky ownership (issue 14): one pooled backend serves two orgs
// transaction by transaction. Each transaction sees only its org's rows; the same backend pid
// answers both; a run of one owner's transactions costs the backend no statement beyond the
// client's own, and each change of owner exactly one reset and one switch (counted in the
// server's own statement log); a client that empties its context itself does not make the
// backend's book lie to anyone: its own next transaction sees nothing (SQL path) or cannot
// empty it at all (guard path), and the other org's next transaction sees its own rows.
import t from 'tap';
import { ownerReset } from '../../proxy/pool/switch.js';
import { contextPath } from '../support/pgvpd.js';
import { waitFor } from './clients-support.js';
import { failure } from './org-support.js';
import { StatementLog, seenIn, txOrgs, view, type Org } from './tx-fixture.js';

const x = await txOrgs(t, { pool_size: 1, instance_lease: 3600 });
const log = await StatementLog.start(x);
const path = await contextPath(x.db);

/** What each org's marked statement is, so that the server's log says whose it was. */
const marked = (org: Org): string =>
  `select '${org}' as who, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant, ` +
  "(select coalesce(array_agg(body order by body), '{}') from public.docs) as rows";

/** A log line as what it was: an org's statement, the owner reset, the switch, or itself. */
function kind(statement: string): string {
  if (statement.startsWith("select 'acme'")) return 'acme';
  if (statement.startsWith("select 'beta'")) return 'beta';
  if (statement === ownerReset) return 'reset';
  if (statement.includes('pgvpd.switch_context(')) return 'switch';
  return statement;
}

t.test('two orgs alternating 200 transactions on one backend', async (t) => {
  const clients = { acme: await x.client(t, 'acme'), beta: await x.client(t, 'beta') };
  const first = await view(clients.acme);
  t.same(seenIn(first), x.expected('acme'), 'acme sees acme');
  const pid = first.pid;

  await t.test('each transaction sees only its own org, on the same backend pid', async (t) => {
    log?.mark();
    const wrong: string[] = [];
    const pids = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const org: Org = i % 2 === 0 ? 'beta' : 'acme';
      const { rows } = await clients[org].query<{
        who: string;
        pid: number;
        tenant: string;
        rows: string[];
      }>(marked(org));
      const row = rows[0]!;
      pids.add(row.pid);
      if (
        JSON.stringify({ tenant: row.tenant, rows: row.rows }) !== JSON.stringify(x.expected(org))
      )
        wrong.push(`${String(i)} ${org}: ${JSON.stringify(row)}`);
    }
    t.same(wrong, [], 'all 200 answers were their own org’s tenant and rows');
    t.same([...pids], [pid], 'one backend pid served both orgs');
    if (!log) {
      t.comment('the server’s log is not readable here: statements not counted');
      return;
    }
    const kinds = log.statements(pid).map(kind);
    const expected: string[] = [];
    for (let i = 0; i < 200; i++) expected.push('reset', 'switch', i % 2 === 0 ? 'beta' : 'acme');
    t.same(
      kinds,
      expected,
      'the backend ran, per change of owner, one reset and one switch, then the client’s statement',
    );
  });

  await t.test('same-owner transactions add no statement on the backend', async (t) => {
    // acme held it last; beta takes it once, then acme runs 50 transactions in a row.
    await clients.beta.query(marked('beta'));
    log?.mark();
    const wrong: string[] = [];
    for (let i = 0; i < 50; i++) {
      const { rows } = await clients.acme.query<{ pid: number; tenant: string; rows: string[] }>(
        marked('acme'),
      );
      const row = rows[0]!;
      if (
        row.pid !== pid ||
        row.tenant !== x.f.orgs.acme ||
        JSON.stringify(row.rows) !== '["a1","a2"]'
      )
        wrong.push(`${String(i)}: ${JSON.stringify(row)}`);
    }
    t.same(wrong, [], 'acme saw acme on the same backend 50 times');
    if (!log) return;
    const kinds = log.statements(pid).map(kind);
    t.same(
      kinds,
      ['reset', 'switch', ...Array<string>(50).fill('acme')],
      'one reset and one switch for the change from beta, then only acme’s 50 statements',
    );
  });

  await t.test(
    'a transaction block of one owner is one checkout, no statement between its statements',
    async (t) => {
      log?.mark();
      await clients.acme.query('begin');
      const inside = await view(clients.acme);
      await clients.acme.query(
        "insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'a-tx')",
      );
      const after = (
        await clients.acme.query<{ rows: string[] }>(
          'select array_agg(body order by body) as rows from public.docs',
        )
      ).rows[0]!.rows;
      await clients.acme.query('rollback');
      t.equal(inside.pid, pid, 'the block ran on the same backend');
      t.same(after, ['a-tx', 'a1', 'a2'], 'acme sees its insert inside the block');
      t.same(
        seenIn(await view(clients.beta)),
        x.expected('beta'),
        'beta never sees acme’s rolled back row',
      );
      if (!log) return;
      t.same(
        log.statements(pid).map((s) => (kind(s) === s ? s.split(' ')[0] : kind(s))),
        ['begin', 'select', 'insert', 'select', 'rollback', 'reset', 'switch', 'select'],
        'acme’s block ran as its five statements; beta’s came after a reset and a switch',
      );
    },
  );
});

t.test('a context emptied by its own client leaks nothing (stale book)', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  const before = await view(acme);
  t.same(seenIn(before), x.expected('acme'), 'acme sees acme first');
  if (path === 'guard') {
    const f = await failure(acme.query("select set_config('pgvpd.context', '', false)"));
    t.same(
      { code: f.code, message: f.message },
      { code: '42501', message: 'permission denied to set parameter "pgvpd.context"' },
      'guard path: the client cannot empty its context',
    );
    t.same(seenIn(await view(acme)), x.expected('acme'), 'guard path: acme still sees acme');
  } else {
    await acme.query("select set_config('pgvpd.context', '', false)");
    const next = await view(acme);
    t.equal(next.pid, before.pid, 'acme’s next transaction ran on the same backend');
    t.same(
      seenIn(next),
      { tenant: null, rows: [] },
      'SQL path: acme’s next transaction sees zero rows',
    );
  }
  const b = await view(beta);
  t.equal(b.pid, before.pid, 'beta’s transaction ran on that backend');
  t.same(seenIn(b), x.expected('beta'), 'beta’s next transaction sees beta');
  t.same(seenIn(await view(acme)), x.expected('acme'), 'and acme after it sees acme again');
});

for (const emptying of ['RESET ALL', 'DISCARD ALL']) {
  t.test(`a client's ${emptying} costs its own context nothing after`, async (t) => {
    const acme = await x.client(t, 'acme');
    const beta = await x.client(t, 'beta');
    const pid = (await view(acme)).pid;
    await acme.query(emptying);
    const next = await view(acme);
    t.same(
      [next.pid, seenIn(next)],
      [pid, x.expected('acme')],
      'acme’s next transaction sees acme',
    );
    t.same(seenIn(await view(beta)), x.expected('beta'), 'beta’s sees beta');
  });
}

t.test('with two backends, each org keeps to the backend that holds its context', async (t) => {
  const y = await txOrgs(t, { pool_size: 2, instance_lease: 3600 });
  const ylog = await StatementLog.start(y);
  const acme = await y.client(t, 'acme');
  const beta = await y.client(t, 'beta');
  // Both backends open and owned: beta's first transaction while acme holds one.
  await acme.query('begin');
  const a0 = await view(acme);
  const b0 = await view(beta);
  await acme.query('commit');
  t.not(a0.pid, b0.pid, 'two backends');
  ylog?.mark();
  const wrong: string[] = [];
  for (let i = 0; i < 40; i++) {
    const org: Org = i % 2 === 0 ? 'acme' : 'beta';
    const v = await view(org === 'acme' ? acme : beta);
    const pid = org === 'acme' ? a0.pid : b0.pid;
    if (v.pid !== pid || JSON.stringify(seenIn(v)) !== JSON.stringify(y.expected(org)))
      wrong.push(`${String(i)} ${org}: ${JSON.stringify(v)}`);
  }
  t.same(wrong, [], 'acme always got its backend, beta its own, each seeing its rows');
  if (!ylog) return;
  t.same(
    [...ylog.statements(a0.pid), ...ylog.statements(b0.pid)].filter(
      (s) => kind(s) === 'reset' || kind(s) === 'switch',
    ),
    [],
    'no reset and no switch ran on either backend',
  );
});

t.test('an org’s own pool mode: transaction for acme under a session-mode proxy', async (t) => {
  const y = await txOrgs(t, { pool_mode: 'session', pool_size: 2, pool_checkout_timeout: 2 });
  await y.db.query(`select pgvpd.org_set_pool_mode($1, 'transaction')`, [y.f.orgs.acme]);
  const catalog = y.f.proxy.runtime.org?.catalog;
  t.ok(
    await waitFor(() => catalog?.org('acme-analytics')?.pool_mode === 'transaction'),
    'the proxy’s catalog learned acme’s pool mode',
  );
  const beta = await y.client(t, 'beta');
  const betaPid = (await view(beta)).pid;
  const acmes = [await y.client(t, 'acme'), await y.client(t, 'acme'), await y.client(t, 'acme')];
  const pids = new Set<number>();
  const wrong: string[] = [];
  for (let i = 0; i < 12; i++) {
    const v = await view(acmes[i % 3]!);
    pids.add(v.pid);
    if (JSON.stringify(seenIn(v)) !== JSON.stringify(y.expected('acme')))
      wrong.push(JSON.stringify(v));
  }
  t.same(wrong, [], 'three acme clients, every answer acme’s');
  t.same([...pids].length, 1, 'all served by the one backend beta’s session leaves');
  t.not([...pids][0], betaPid, 'not beta’s');
  t.equal((await view(beta)).pid, betaPid, 'beta keeps its backend for its session');
});

t.test(
  'the same owner’s context is switched in again, without a reset, when it may be stale',
  async (t) => {
    await t.test('after a catalog change', async (t) => {
      const acme = await x.client(t, 'acme');
      const pid = (await view(acme)).pid;
      await view(acme);
      log?.mark();
      await x.db.query(`select pgvpd.org_set_pool_mode($1, 'transaction')`, [x.f.orgs.beta]);
      t.ok(
        await waitFor(
          () => x.f.proxy.runtime.org?.catalog.org('beta-db')?.pool_mode === 'transaction',
        ),
        'the proxy’s catalog has the change',
      );
      const first = await view(acme);
      const second = await view(acme);
      t.same(
        [first.pid, seenIn(first), second.pid, seenIn(second)],
        [pid, x.expected('acme'), pid, x.expected('acme')],
        'acme sees acme on its backend',
      );
      if (!log) return;
      t.same(
        log.statements(pid).map((s) => (kind(s) === s ? 'select' : kind(s))),
        ['switch', 'select', 'select'],
        'one switch before the first transaction after the change, no reset, then nothing',
      );
    });

    await t.test('once older than context_max_age', async (t) => {
      const z = await txOrgs(t, { pool_size: 1, context_max_age: 1 });
      const zlog = await StatementLog.start(z);
      const acme = await z.client(t, 'acme');
      const pid = (await view(acme)).pid;
      zlog?.mark();
      await view(acme);
      await new Promise((resolve) => setTimeout(resolve, 1200));
      const late = await view(acme);
      t.same([late.pid, seenIn(late)], [pid, z.expected('acme')], 'acme sees acme on its backend');
      if (!zlog) return;
      t.same(
        zlog.statements(pid).map((s) => (kind(s) === s ? 'select' : kind(s))),
        ['select', 'switch', 'select'],
        'the context older than a second is switched in again, with no reset',
      );
    });
  },
);
