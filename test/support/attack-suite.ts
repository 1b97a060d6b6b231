// The attack suite (docs/architecture.md §7.2): a client of tenant a, connected as the
// application role with a valid context, tries everything we know to read tenant b's rows.
// Each attack ends in zero rows of b, or in a permission error with its exact SQLSTATE.
// It runs twice: with contexts set the proxy's way by hand (test/sql/attacks.test.ts) and with
// sessions that really come through the proxy (test/proxy/attacks.test.ts); and on whichever
// context path the database uses (docs/guard.md). On the SQL path a client may write
// pgvpd.context, and what it writes verifies nothing (zero rows); on the guard path the write
// itself is refused (42501) and the verified context stays.
import type pg from 'pg';
import type { Test } from 'tap';
import { connect, contextPath, type LoginRole, sqlstate } from './pgvpd.js';
import type { TestDatabase } from './postgres.js';

export interface AttackFixture {
  db: TestDatabase;
  /** The application role; a direct connection with it has no context. */
  app: LoginRole;
  /** A session of the application role with a context for `tenant` (none for null). */
  sessionFor(tenant: string | null): Promise<{ client: pg.Client; token: string | null }>;
  /** Rows of tenants a and b the client can see in public.notes. */
  visible(client: pg.Client): Promise<{ a: number; b: number; total: number }>;
}

export function attackSuite(t: Test, f: AttackFixture): void {
  let guardPath: boolean | undefined;
  /** Whether the database uses the guard path (the pgvpd_guard module). */
  const guard = async (): Promise<boolean> => (guardPath ??= (await contextPath(f.db)) === 'guard');

  /**
   * The client writes pgvpd.context itself. SQL path: the write succeeds and the session sees no
   * rows at all. Guard path: 42501, and the session keeps its own rows, none of b's.
   */
  async function writeContext(
    t: Test,
    client: pg.Client,
    write: () => Promise<unknown>,
    own: { a: number; b: number; total: number },
  ): Promise<void> {
    if (await guard()) {
      t.equal(await sqlstate(write()), '42501', 'the guard module refuses the write');
      t.same(await f.visible(client), own, 'the verified context stays as it was');
    } else {
      t.equal(await sqlstate(write()), 'no error', 'pgvpd.context is writable on the SQL path');
      t.same(
        await f.visible(client),
        { a: 0, b: 0, total: 0 },
        'what was written verifies nothing',
      );
    }
  }

  /** Base64url helpers to take a token apart the way an attacker would. */
  const own = { a: 2, b: 0, total: 2 };
  const b64 = {
    decode: (s: string) => Buffer.from(s, 'base64url').toString('utf8'),
    encode: (s: string) => Buffer.from(s, 'utf8').toString('base64url'),
  };

  t.test('a session with a valid context sees its own tenant only', async (t) => {
    const { client } = await f.sessionFor('a');
    t.same(await f.visible(client), { a: 2, b: 0, total: 2 });
  });

  t.test('SET pgvpd.context to a forged token shows no rows of b', async (t) => {
    const { client, token } = await f.sessionFor('a');
    const [v, kid, pid, payload] = token!.split('.');
    const forgedPayload = b64.encode(
      JSON.stringify({ ...JSON.parse(b64.decode(payload!)), t: 'b' }),
    );
    const forged = `${v}.${kid}.${pid}.${forgedPayload}.${b64.encode('not-a-real-mac-but-32-bytes-long')}`;
    await writeContext(t, client, () => client.query(`set pgvpd.context = '${forged}'`), own);
    t.equal(
      await sqlstate(client.query('select pgvpd.set_context($1)', [forged])),
      '28000',
      'set_context refuses it',
    );
  });

  t.test('set_config with a token copied from tenant b’s session shows no rows of b', async (t) => {
    const { client } = await f.sessionFor('a');
    const { client: other, token: tokenB } = await f.sessionFor('b');
    t.same(await f.visible(other), { a: 0, b: 3, total: 3 }, 'the token works in its own session');
    await writeContext(
      t,
      client,
      () => client.query(`select set_config('pgvpd.context', $1, false)`, [tokenB]),
      own,
    );
    t.equal(await sqlstate(client.query('select pgvpd.set_context($1)', [tokenB])), '28000');
  });

  t.test('a token for the right pid with the tenant changed shows no rows of b', async (t) => {
    const { client, token } = await f.sessionFor('a');
    const parts = token!.split('.');
    const payload = JSON.parse(b64.decode(parts[3]!)) as Record<string, unknown>;
    parts[3] = b64.encode(JSON.stringify({ ...payload, t: 'b' }));
    const tampered = parts.join('.');
    await writeContext(
      t,
      client,
      () => client.query(`select set_config('pgvpd.context', $1, false)`, [tampered]),
      own,
    );
    t.equal(await sqlstate(client.query('select pgvpd.set_context($1)', [tampered])), '28000');
  });

  t.test('the tenant and user settings cannot be written either', async (t) => {
    const { client } = await f.sessionFor('a');
    for (const name of ['pgvpd.tenant_id', 'pgvpd.user_id', 'pgvpd.values']) {
      const write = (): Promise<unknown> =>
        client.query(`select set_config($1, $2, false)`, [name, '"b"']);
      if (await guard()) {
        t.equal(await sqlstate(write()), '42501', `set_config('${name}') is refused`);
      } else {
        // Placeholders nothing reads on the SQL path.
        t.equal(await sqlstate(write()), 'no error', `${name} is a mere placeholder`);
      }
      t.same(await f.visible(client), own, `after writing ${name}`);
    }
  });

  t.test('RESET ALL leaves the session with no rows at all', async (t) => {
    const { client } = await f.sessionFor('a');
    await client.query('reset all');
    t.same(await f.visible(client), { a: 0, b: 0, total: 0 });
  });

  t.test('DISCARD ALL leaves the session with no rows at all', async (t) => {
    const { client } = await f.sessionFor('a');
    await client.query('discard all');
    t.same(await f.visible(client), { a: 0, b: 0, total: 0 });
  });

  t.test('SET ROLE to a privileged role is refused and RESET ROLE changes nothing', async (t) => {
    const { client } = await f.sessionFor('a');
    for (const role of ['postgres', 'pgvpd_admin', 'pgvpd_proxy']) {
      t.equal(await sqlstate(client.query(`set role ${role}`)), '42501', `set role ${role}`);
    }
    await client.query('reset role');
    t.same(await f.visible(client), { a: 2, b: 0, total: 2 });
  });

  t.test('SET SESSION AUTHORIZATION is refused', async (t) => {
    const { client } = await f.sessionFor('a');
    t.equal(await sqlstate(client.query('set session authorization postgres')), '42501');
    t.same(await f.visible(client), { a: 2, b: 0, total: 2 });
  });

  t.test('calling the token-issuing functions directly is refused', async (t) => {
    const { client } = await f.sessionFor('a');
    const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!
      .pid;
    t.equal(
      await sqlstate(client.query('select pgvpd.issue_context($1, $2)', [pid, 'b'])),
      '42501',
      'issue_context',
    );
    t.equal(
      await sqlstate(client.query(`select pgvpd.assume_tenant('b')`)),
      '42501',
      'assume_tenant',
    );
    t.equal(await sqlstate(client.query(`select pgvpd.rotate_key()`)), '42501', 'rotate_key');
    t.same(await f.visible(client), { a: 2, b: 0, total: 2 });
  });

  t.test('pgvpd_private cannot be read', async (t) => {
    const { client } = await f.sessionFor('a');
    for (const table of ['signing_key', 'session_context', 'app_role']) {
      t.equal(await sqlstate(client.query(`select * from pgvpd_private.${table}`)), '42501', table);
    }
    t.equal(
      await sqlstate(client.query(`select pgvpd_private.issue(pg_backend_pid(), 'b', null, '{}')`)),
      '42501',
      'internal issuer',
    );
  });

  t.test('a function shadowing current_tenant_id changes nothing', async (t) => {
    const { client } = await f.sessionFor('a');
    t.equal(
      await sqlstate(
        client.query(
          `create or replace function public.current_tenant_id() returns text language sql as $$ select 'b' $$`,
        ),
      ),
      '42501',
      'public is not writable by the application role',
    );
    await client.query(
      `create function pg_temp.current_tenant_id() returns text language sql as $$ select 'b'::text $$`,
    );
    await client.query(`set search_path = pg_temp, public, pgvpd`);
    t.same(
      await f.visible(client),
      { a: 2, b: 0, total: 2 },
      'the policy still calls pgvpd.current_tenant_id',
    );
  });

  t.test('a direct connection that never went through a proxy sees no rows', async (t) => {
    const client = await connect(f.app.url);
    t.teardown(() => client.end());
    t.same(await f.visible(client), { a: 0, b: 0, total: 0 });
    t.equal(
      await client.query(`select pgvpd.current_tenant_id() as t`).then((r) => r.rows[0].t),
      null,
    );
  });

  t.test('a context set in a rolled-back transaction leaves nothing behind', async (t) => {
    const { client } = await f.sessionFor(null);
    const { token: tokenB } = await f.sessionFor('b');
    await client.query('begin');
    t.equal(
      await sqlstate(client.query(`select set_config('pgvpd.context', $1, false)`, [tokenB])),
      (await guard()) ? '42501' : 'no error',
    );
    await client.query('rollback');
    t.same(await f.visible(client), { a: 0, b: 0, total: 0 });
  });

  // Tenant confinement (issue 11): what the shared role may do in PostgreSQL reaches nothing of b.
  t.test(
    'reading b’s activity, signalling b, large objects and catalog notifications are refused',
    async (t) => {
      const { client } = await f.sessionFor('a');
      const { client: b } = await f.sessionFor('b');
      const bPid = (await b.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
      await b.query(`select 'b-literal' as secret`);
      for (const [what, sql] of [
        ['pg_stat_activity', `select query from pg_stat_activity`],
        ['pg_stat_get_activity', `select query from pg_stat_get_activity(${String(bPid)})`],
        ['pg_stat_get_backend_activity', `select pg_stat_get_backend_activity(1)`],
        ['pg_terminate_backend', `select pg_terminate_backend(${String(bPid)})`],
        ['pg_cancel_backend', `select pg_cancel_backend(${String(bPid)})`],
        ['lo_from_bytea', `select lo_from_bytea(0, 'x')`],
        ['pg_largeobject_metadata', `select * from pg_largeobject_metadata`],
      ] as const) {
        t.equal(await sqlstate(client.query(sql)), '42501', what);
      }
      t.same(await f.visible(b), { a: 0, b: 3, total: 3 }, 'b is alive and sees only b');
      await client.query('listen pgvpd_catalog');
      t.same(await f.visible(client), { a: 2, b: 0, total: 2 });
    },
  );

  t.test('retiring the signing key voids its tokens; rotation alone does not', async (t) => {
    const { client, token: token0 } = await f.sessionFor('a');
    const admin = await connect(f.db.url);
    t.teardown(() => admin.end());
    const oldKid = (
      await admin.query<{ kid: string }>(
        `select kid from pgvpd_private.signing_key where retired_at is null`,
      )
    ).rows[0]!.kid;
    await admin.query('select pgvpd.rotate_key()');
    t.same(
      await f.visible(client),
      { a: 2, b: 0, total: 2 },
      'a live session keeps working after rotation',
    );
    const { client: fresh, token } = await f.sessionFor('a');
    t.not(token!.split('.')[1], oldKid, 'new tokens are signed with the new key');
    const ended = new Promise<string>((resolve) => {
      client.once('error', (error: Error & { code?: string }) => {
        resolve(error.code ?? error.message);
      });
      setTimeout(() => {
        resolve('no error within 5 s');
      }, 5000).unref();
    });
    await admin.query('select pgvpd.retire_key($1)', [oldKid]);
    if (await guard()) {
      // The guard path verified the token once, when it was set; retire_key ends the sessions
      // that hold a context under the retired key: PostgreSQL sends their clients FATAL 57P01,
      // which arrives as the client's error event (no query is running).
      t.equal(await ended, '57P01', 'guard path: the live session under the retired key is ended');
      const { client: other } = await f.sessionFor(null);
      t.equal(
        await sqlstate(other.query('select pgvpd.set_context($1)', [token0])),
        '28000',
        'a token under the retired key is refused when set',
      );
    } else {
      t.same(
        await f.visible(client),
        { a: 0, b: 0, total: 0 },
        'SQL path: a token under the retired key is void at once',
      );
      t.equal(
        await sqlstate(client.query('select pgvpd.set_context($1)', [token0])),
        '28000',
        'a token under the retired key is refused when set',
      );
    }
    t.same(
      await f.visible(fresh),
      { a: 2, b: 0, total: 2 },
      'a token under the new key still works',
    );
  });
}
