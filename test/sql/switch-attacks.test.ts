// Attacks on pgvpd.switch_context from the tenant's own session (issue 14, security review), on
// the context path this run's server gives. The proxy applies a client's settings with
// set_config in the same select list, before the switch (proxy/pool/switch.ts): whatever a
// client chooses there, or has set earlier, does not change what the switch checks or sets —
// a search_path that puts functions named like sha256, convert_to or pg_backend_pid first, row
// security off, read-only defaults, another DateStyle or TimeZone; a setting that makes the
// switch's own write impossible fails it closed, with nothing written. And a tenant role cannot
// plant a function of its own in pgvpd or pgvpd_private.
import { createHmac } from 'node:crypto';
import type pg from 'pg';
import t from 'tap';
import { backendPid } from '../support/pgvpd.js';
import { fixture } from './fixture.js';

const f = await fixture(t);
const { db } = f;

const registered = await f.proxy.query<{ instance_id: string; secret: string }>(
  "select instance_id, secret from pgvpd.register_instance('attack-test:1:6432', 60)",
);
const key = registered.rows[0]!;

// Functions named like the ones switch_context calls, first on a search_path a client may choose.
// Each would make any MAC verify, or any backend look like the grant's, if it were called.
await db.query(`
  create schema evil;
  grant usage on schema evil to public;
  create function evil.sha256(bytea) returns bytea language sql immutable as $$ select '\\x00'::bytea $$;
  create function evil.convert_to(text, name) returns bytea language sql immutable as $$ select '\\x00'::bytea $$;
  create function evil.encode(bytea, text) returns text language sql immutable as $$ select 'x' $$;
  create function evil.pg_backend_pid() returns integer language sql stable as $$ select 1 $$;
  grant execute on all functions in schema evil to public;
`);

/** A grant for `client`'s backend: app mode, `tenant`, sequence `seq`, MAC under the key. */
async function grantFor(client: pg.Client, tenant: string, seq: number): Promise<string[]> {
  // Qualified: the client's search_path may put evil.pg_backend_pid first.
  const { rows } = await client.query<{ pid: number; start: string }>(
    'select pg_catalog.pg_backend_pid() as pid, pgvpd.backend_start() as start',
  );
  const claims = JSON.stringify({
    pid: rows[0]!.pid,
    start: rows[0]!.start,
    seq,
    org: null,
    tenant,
    user: null,
    vals: {},
  });
  const mac = createHmac('sha256', Buffer.from(key.secret, 'hex'))
    .update(claims, 'utf8')
    .digest('hex');
  return [key.instance_id, claims, mac];
}

/** What the proxy sends: a client setting, then the switch, in one select list. */
function switchWith(client: pg.Client, name: string, value: string, grant: string[]) {
  return client.query<{ tenant: string }>(
    'select pg_catalog.set_config($1, $2, false), pgvpd.switch_context($3::bigint, $4, $5) as tenant',
    [name, value, ...grant],
  );
}

async function failure(promise: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await promise;
    return { message: 'no error' };
  } catch (error) {
    const { code, message } = error as { code?: string; message: string };
    return { code, message };
  }
}

async function appSession(): Promise<pg.Client> {
  return (await f.sessionFor(null)).client;
}

const settings: [string, string][] = [
  ['search_path', 'evil, pg_catalog, public'],
  ['row_security', 'off'],
  ['default_transaction_read_only', 'on'],
  ['DateStyle', 'SQL, DMY'],
  ['TimeZone', 'Pacific/Chatham'],
  ['extra_float_digits', '-15'],
  ['standard_conforming_strings', 'off'],
  ['bytea_output', 'escape'],
];

for (const [name, value] of settings) {
  t.test(`${name} = ${value} before the switch changes nothing it checks or sets`, async (t) => {
    const client = await appSession();
    t.same(
      (await switchWith(client, name, value, await grantFor(client, 'a', 1))).rows[0]?.tenant,
      'a',
      'a grant set in the same statement as the setting is taken',
    );
    if (name !== 'row_security')
      t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'tenant a’s rows only');
    // The setting is in effect now, for the statement's parse as well.
    const forB = await grantFor(client, 'b', 2);
    const forged = [forB[0]!, forB[1]!, (await grantFor(client, 'a', 2))[2]!];
    t.same(
      await failure(switchWith(client, name, value, forged)),
      { code: '28000', message: 'pgvpd: switch grant signature does not verify' },
      'a MAC of other claims does not verify',
    );
    const elsewhere = await grantFor(client, 'b', 3);
    const claims = JSON.parse(elsewhere[1]!) as { pid: number };
    const other = JSON.stringify({ ...claims, pid: claims.pid + 1 });
    const mac = createHmac('sha256', Buffer.from(key.secret, 'hex'))
      .update(other, 'utf8')
      .digest('hex');
    t.same(
      await failure(switchWith(client, name, value, [key.instance_id, other, mac])),
      { code: '28000', message: 'pgvpd: switch grant was minted for another backend' },
      'a grant for another pid is refused',
    );
    t.same(
      await failure(switchWith(client, name, value, await grantFor(client, 'a', 1))),
      {
        code: '28000',
        message:
          'pgvpd: switch grant is not newer than the one this backend holds (replayed or out of order)',
      },
      'the spent grant is refused',
    );
    if (name === 'default_transaction_read_only') {
      // Now in effect when the statement's transaction starts: the switch cannot write its record.
      t.same(
        await failure(switchWith(client, name, value, await grantFor(client, 'b', 4))),
        { code: '25006', message: 'cannot execute INSERT in a read-only transaction' },
        'the next switch fails closed',
      );
      t.same(await f.visible(client), { a: 2, b: 0, total: 2 }, 'and a’s context stays');
      return;
    }
    t.same(
      (await switchWith(client, name, value, await grantFor(client, 'b', 4))).rows[0]?.tenant,
      'b',
      'a newer grant is taken',
    );
    if (name !== 'row_security')
      t.same(await f.visible(client), { a: 0, b: 3, total: 3 }, 'tenant b’s rows only');
  });
}

t.test('row_security = off: a tenant query fails instead of seeing other rows', async (t) => {
  const client = await appSession();
  await switchWith(client, 'row_security', 'off', await grantFor(client, 'a', 1));
  t.same(await failure(f.visible(client)), {
    code: '42501',
    message: 'query would be affected by row-level security policy for table "notes"',
  });
});

t.test('transaction_read_only before the switch fails it closed, with nothing written', async (t) => {
  const client = await appSession();
  const pid = await backendPid(client);
  t.same(
    await failure(switchWith(client, 'transaction_read_only', 'on', await grantFor(client, 'a', 1))),
    { code: '25006', message: 'cannot execute INSERT in a read-only transaction' },
  );
  const { rows } = await db.query('select 1 from pgvpd_private.session_context where pid = $1', [
    pid,
  ]);
  t.same(rows, [], 'no record for the backend');
  t.same(await f.visible(client), { a: 0, b: 0, total: 0 }, 'no context');
});

t.test('a tenant role cannot plant a function in pgvpd or pgvpd_private', async (t) => {
  const client = await appSession();
  for (const schema of ['pgvpd', 'pgvpd_private'])
    t.same(
      await failure(
        client.query(
          `create function ${schema}.switch_context(p_instance integer, p_claims text, p_mac text) returns text language sql as $$ select 'a' $$`,
        ),
      ),
      { code: '42501', message: `permission denied for schema ${schema}` },
      schema,
    );
});
