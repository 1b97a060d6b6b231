// Fail-closed context and tenant isolation for every command (docs/architecture.md §7.1, §7.2).
import t from 'tap';
import { contextPath, giveContext, sqlstate } from '../support/pgvpd.js';
import { fixture } from './fixture.js';

const f = await fixture(t);

t.test('returns zero rows when no context is set', async (t) => {
  const { client } = await f.sessionFor(null);
  t.same(await f.visible(client), { a: 0, b: 0, total: 0 });
});

t.test('returns zero rows for a garbage, truncated or empty token', async (t) => {
  const { client: donor, token } = await f.sessionFor('a');
  t.same(await f.visible(donor), { a: 2, b: 0, total: 2 }, 'the donor token is valid where it was issued');
  const { client } = await f.sessionFor(null);
  const ownPid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const cases: Record<string, string> = {
    garbage: 'garbage',
    empty: '',
    truncated: token!.slice(0, token!.length - 5),
    'dots only': '....',
    'valid shape, own pid, no signature': `v1.x.${ownPid}.e30.`,
    'huge value': 'v1.'.padEnd(100_000, 'A'),
  };
  const guard =
    (await contextPath(f.db)) === 'guard';
  for (const [name, value] of Object.entries(cases)) {
    // Written the way a client could, or refused where the guard module makes that impossible.
    const write = client.query(`select set_config('pgvpd.context', $1, false)`, [value]);
    t.equal(await sqlstate(write), guard ? '42501' : 'no error', `${name}: written by the client`);
    t.equal(await sqlstate(client.query('select pgvpd.set_context($1)', [value])), '28000', `${name}: set_context refuses it`);
    t.same(await f.visible(client), { a: 0, b: 0, total: 0 }, name);
    t.equal(await client.query('select pgvpd.current_tenant_id() as v').then((r) => r.rows[0].v), null, `${name}: current_tenant_id() is NULL`);
  }
});

t.test('select, insert, update and delete act on the session tenant only', async (t) => {
  const { client } = await f.sessionFor('a');
  const inserted = await client.query(`insert into public.notes (tenant_id, body) values ('a', 'a3') returning id`);
  t.equal(inserted.rowCount, 1, 'insert of an own row');
  const updated = await client.query(`update public.notes set body = body || '!'`);
  t.equal(updated.rowCount, 3, 'update touches the three rows of a only');
  const deleted = await client.query(`delete from public.notes where body = 'a3!'`);
  t.equal(deleted.rowCount, 1, 'delete of an own row');
  const deletedOther = await client.query(`delete from public.notes where tenant_id = 'b'`);
  t.equal(deletedOther.rowCount, 0, 'delete cannot reach rows of b');
  const { rows } = await f.db.query<{ b: number; changed: number }>(
    `select count(*) filter (where tenant_id = 'b')::int as b, count(*) filter (where body like '%!')::int as changed from public.notes`,
  );
  t.same(rows[0], { b: 3, changed: 2 }, 'seen by the superuser: b untouched, a changed');
});

t.test('WITH CHECK rejects writing a row of another tenant', async (t) => {
  const { client } = await f.sessionFor('a');
  t.equal(await sqlstate(client.query(`insert into public.notes (tenant_id, body) values ('b', 'planted')`)), '42501', 'insert of a b row');
  t.equal(await sqlstate(client.query(`update public.notes set tenant_id = 'b'`)), '42501', 'moving a row to b');
  t.equal(await sqlstate(client.query(`insert into public.notes (tenant_id, body) values (null, 'orphan')`)), '42501', 'a NULL tenant is refused by the policy (checked before NOT NULL)');
  const { rows } = await f.db.query<{ n: number }>(`select count(*)::int as n from public.notes where body = 'planted'`);
  t.equal(rows[0]!.n, 0, 'nothing was written');
});

t.test('a session without context can write nothing', async (t) => {
  const { client } = await f.sessionFor(null);
  t.equal(await sqlstate(client.query(`insert into public.notes (tenant_id, body) values ('a', 'x')`)), '42501');
  t.equal((await client.query(`update public.notes set body = 'x'`)).rowCount, 0);
  t.equal((await client.query(`delete from public.notes`)).rowCount, 0);
});

t.test('context carries the user and extra values', async (t) => {
  const client = await f.app.connect();
  t.teardown(() => client.end());
  await giveContext(f.proxy, client, 'a', 'alice', { role: 'editor' });
  const { rows } = await client.query(
    `select pgvpd.context('tenant') as tenant, pgvpd.context('user') as "user", pgvpd.context('role') as role,
            pgvpd.context('missing') as missing, public.current_tenant_id() as compat`,
  );
  t.same(rows[0], { tenant: 'a', user: 'alice', role: 'editor', missing: null, compat: 'a' });
});

t.test('issue_context refuses bad input with 22023', async (t) => {
  const { client } = await f.sessionFor(null);
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const issue = (tenant: string | null, vals: unknown = {}) =>
    f.proxy.query('select pgvpd.issue_context($1, $2, null, $3)', [pid, tenant, JSON.stringify(vals)]);
  t.equal(await sqlstate(issue(null)), '22023', 'NULL tenant');
  t.equal(await sqlstate(issue('')), '22023', 'empty tenant');
  t.equal(await sqlstate(issue('a\nb')), '22023', 'control character');
  t.equal(await sqlstate(issue('a', { 'Bad-Key': 'x' })), '22023', 'bad value name');
  t.equal(await sqlstate(issue('a', { tenant: 'b' })), '22023', 'a value named tenant');
  t.equal(await sqlstate(issue('a', { nested: { x: 1 } })), '22023', 'a nested value');
  t.equal(await sqlstate(f.proxy.query('select pgvpd.issue_context(1, $1)', ['a'])), '22023', 'a pid that is no client backend');
});

// The limits at their edges: 000007 checks lengths and control characters without a bounded
// repetition, and must accept and refuse exactly what '^[^[:cntrl:]]{1,255}$' and
// '^[a-z_][a-z0-9_]{0,62}$' did.
t.test('issue_context accepts and refuses at the edges of its limits', async (t) => {
  const { client } = await f.sessionFor(null);
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  const issue = (tenant: string | null, user: string | null, vals: unknown = {}) =>
    f.proxy.query<{ token: string }>('select pgvpd.issue_context($1, $2, $3, $4) as token', [
      pid,
      tenant,
      user,
      JSON.stringify(vals),
    ]);
  const refusal = async (q: Promise<unknown>) => {
    const e = await q.then(
      () => undefined,
      (error: unknown) => error as { code?: string; message?: string; hint?: string },
    );
    if (!e) return 'accepted';
    return `${e.code ?? '?'} ${e.message ?? ''}${e.hint ? ` (hint: ${e.hint})` : ''}`;
  };
  const valueHint =
    ' (hint: names match ^[a-z_][a-z0-9_]{0,62}$ (not tenant or user); values are strings, numbers or booleans)';
  const tenantMessage = '22023 pgvpd: tenant must be 1 to 255 characters without control characters';
  const userMessage = '22023 pgvpd: user must be 1 to 255 characters without control characters';
  t.equal(await refusal(issue('é'.repeat(255), null)), 'accepted', '255 characters (510 bytes) of tenant');
  t.equal(await refusal(issue('a'.repeat(256), null)), tenantMessage, '256 characters of tenant');
  t.equal(await refusal(issue('a\tb', null)), tenantMessage, 'a tab in the tenant');
  t.equal(await refusal(issue('a\x7fb', null)), tenantMessage, 'DEL in the tenant');
  t.equal(await refusal(issue('a', 'u'.repeat(255))), 'accepted', '255 characters of user');
  t.equal(await refusal(issue('a', 'u'.repeat(256))), userMessage, '256 characters of user');
  t.equal(await refusal(issue('a', '')), userMessage, 'an empty user');
  t.equal(await refusal(issue('a', 'al\rice')), userMessage, 'a carriage return in the user');
  t.equal(await refusal(issue('a', null, { ['k'.repeat(63)]: 1 })), 'accepted', 'a value name of 63 characters');
  t.equal(
    await refusal(issue('a', null, { ['k'.repeat(64)]: 1 })),
    `22023 pgvpd: context value '${'k'.repeat(64)}' is not allowed${valueHint}`,
    'a value name of 64 characters',
  );
  t.equal(
    await refusal(issue('a', null, { '1st': 1 })),
    `22023 pgvpd: context value '1st' is not allowed${valueHint}`,
    'a value name that starts with a digit',
  );
  t.equal(await refusal(issue('a', null, { _x9: true, y: 'z' })), 'accepted', 'value names with _ and digits');
});
