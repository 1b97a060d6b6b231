// Setup chooses the context path from what the server has loaded (docs/guard.md): on a cluster of
// its own, setup without the guard module → SQL path; the module preloaded after install →
// context_path() says setup must run again, and it then ends on the guard path, where the
// application role cannot set the guarded settings; the module taken away → back to SQL.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import t from 'tap';
import { connect, setupSqlPath, sqlstate } from '../support/pgvpd.js';
import { withDatabase } from '../support/postgres.js';
import { secondCluster } from '../support/second-cluster.js';
import { restartLocal, systemBinDir } from '../support/server.js';
import { pgvpd } from './run-cli.js';

const binDir = systemBinDir();
const library =
  binDir === undefined
    ? undefined
    : join(
        execFileSync(join(binDir, 'pg_config'), ['--pkglibdir'], { encoding: 'utf8' }).trim(),
        'pgvpd_guard.so',
      );
if (library === undefined || !existsSync(library)) {
  const reason = `the guard module is not installed (${library ?? 'no system PostgreSQL'}): make -C extension install`;
  t.test('setup and the guard module', { skip: reason }, () => undefined);
} else {
  const cluster = await secondCluster(t);
  const admin = await connect(cluster.adminUrl);
  t.teardown(() => admin.end());
  await admin.query('create database pgvpd_path');
  const url = withDatabase(cluster.adminUrl, 'pgvpd_path');

  let db: pg.Client | undefined;
  /** A fresh connection after each restart. */
  const reconnect = async (): Promise<pg.Client> => {
    await db?.end().catch(() => undefined);
    db = await connect(url);
    return db;
  };
  t.teardown(() => db?.end().catch(() => undefined));
  const contextPath = async (): Promise<{
    path: string;
    module_loaded: boolean;
    problem: string | null;
  }> => (await (await reconnect()).query('select * from pgvpd.context_path()')).rows[0];
  const setupSays = async (): Promise<string> => {
    const result = await pgvpd('setup', '--db', url);
    if (result.code !== 0) throw new Error(`setup failed: ${result.err}`);
    return /^context path: (\w+)/m.exec(result.out)?.[1] ?? `no path line in ${result.out}`;
  };

  t.test('without the module: the SQL path', async (t) => {
    t.equal(await setupSays(), 'sql');
    t.same(await contextPath(), { path: 'sql', module_loaded: false, problem: null });
    const client = await reconnect();
    await client.query(`load 'pgvpd_guard'`);
    const error = await client.query('select pgvpd.choose_context_path()').then(
      () => undefined,
      (e: unknown) => e as pg.DatabaseError,
    );
    t.same(
      { code: error?.code, message: error?.message },
      {
        code: '55000',
        message:
          'pgvpd: the pgvpd_guard module is loaded in this session but the server does not preload it',
      },
      'a module loaded by hand in one session is not the server loading it',
    );
  });

  t.test('the module preloaded after install: reported, then picked up by setup', async (t) => {
    restartLocal(cluster, 'pgvpd_guard');
    t.same(await contextPath(), {
      path: 'sql',
      module_loaded: true,
      problem:
        'the pgvpd_guard module is loaded but this database uses the SQL path: run pgvpd setup (as a superuser) again',
    });
    // Setup in eight databases of one cluster at once, with the cluster-wide SET grants not
    // made yet: each grants what is missing, and a clash over the same pg_parameter_acl rows
    // ("tuple concurrently updated") is tried again, not an error.
    const names = Array.from({ length: 8 }, (_, i) => `pgvpd_path_${String(i + 1)}`);
    const fresh = await connect(cluster.adminUrl);
    for (const name of names) {
      await fresh.query(`create database ${name}`);
      const c = await connect(withDatabase(cluster.adminUrl, name));
      await c.query(readFileSync(setupSqlPath, 'utf8'));
      await c.end();
    }
    const choices: string[] = [];
    for (let attempt = 0; attempt < 3; attempt += 1) {
      await fresh.query(
        `revoke set on parameter pgvpd.context, pgvpd.tenant_id, pgvpd.user_id, pgvpd.values from pgvpd_admin`,
      );
      const clients = await Promise.all(
        names.map((name) => connect(withDatabase(cluster.adminUrl, name))),
      );
      choices.push(
        ...(await Promise.all(
          clients.map((c) =>
            c.query<{ path: string }>('select pgvpd.choose_context_path() as path').then(
              (r) => r.rows[0]!.path,
              (error: unknown) => `failed: ${(error as Error).message}`,
            ),
          ),
        )),
      );
      await Promise.all(clients.map((c) => c.end()));
    }
    await fresh.end();
    t.same(choices, Array<string>(24).fill('guard'), '3 × 8 concurrent setups, all guard');

    const doctor = await pgvpd('doctor', '--db', url);
    t.equal(doctor.code, 1, 'doctor fails');
    t.match(
      doctor.out,
      /^FAIL context path sql does not match the server: the pgvpd_guard module is loaded .* — fix: pgvpd setup, as a superuser$/m,
      'and says why',
    );
    t.equal(await setupSays(), 'guard');
    t.same(await contextPath(), { path: 'guard', module_loaded: true, problem: null });
    const restarted = await connect(cluster.adminUrl);
    await restarted.query('create database pgvpd_path_ext');
    await restarted.end();
    const ext = await connect(withDatabase(cluster.adminUrl, 'pgvpd_path_ext'));
    t.teardown(() => ext.end().catch(() => undefined));
    await ext.query('create extension pgvpd cascade');
    t.same(
      (await ext.query('select path from pgvpd.context_path()')).rows,
      [{ path: 'guard' }],
      'CREATE EXTENSION chooses the guard path too',
    );
    await ext.end();
    t.match(
      (await pgvpd('doctor', '--db', url)).out,
      /^ok {3}context path: guard \(pgvpd_guard loaded/m,
      'doctor shows the guard path',
    );

    const client = await reconnect();
    await client.query(`
      create role pgvpd_path_app login nosuperuser nobypassrls;
      select pgvpd.add_app_role('pgvpd_path_app');
      create table public.notes (tenant_id text, body text);
      insert into public.notes values ('a', 'a1'), ('b', 'b1');
      select pgvpd.protect('public.notes');
      grant select on public.notes to pgvpd_path_app;
      grant pgvpd_path_app to current_user;
    `);
    await client.query('set role pgvpd_path_app');
    t.equal(
      await sqlstate(client.query(`set pgvpd.tenant_id = 'b'`)),
      '42501',
      'the application role cannot set the tenant',
    );
    t.same((await client.query('select body from public.notes')).rows, [], 'no context: no rows');
    await client.query('reset role');
    await client.query(`select pgvpd.assume_tenant('a')`);
    await client.query('set role pgvpd_path_app');
    t.same(
      (await client.query('select body, pgvpd.current_tenant_id() as t from public.notes')).rows,
      [{ body: 'a1', t: 'a' }],
      'a verified context reads as a setting',
    );
  });

  t.test('the module taken away: reported, and setup goes back to the SQL path', async (t) => {
    restartLocal(cluster, '');
    const problem = (await contextPath()).problem ?? '';
    t.match(problem, /^this database uses the guard path but the pgvpd_guard module is not loaded/);
    t.equal(await setupSays(), 'sql');
    t.same(await contextPath(), { path: 'sql', module_loaded: false, problem: null });
    const ext = await connect(withDatabase(cluster.adminUrl, 'pgvpd_path_ext'));
    t.teardown(() => ext.end().catch(() => undefined));
    t.same(
      (await ext.query('select pgvpd.choose_context_path() as path')).rows,
      [{ path: 'sql' }],
      'an extension install goes back to the SQL path as well',
    );
    await ext.query('drop extension pgvpd cascade');
    t.same(
      (await ext.query(`select count(*)::int as n from pg_proc where proname = 'guard_loaded'`))
        .rows,
      [{ n: 0 }],
      'and DROP EXTENSION leaves nothing of the guard path behind',
    );
    const client = await reconnect();
    await client.query(`select pgvpd.assume_tenant('b')`);
    t.equal(
      (await client.query('select pgvpd.current_tenant_id() as t')).rows[0].t,
      'b',
      'contexts work on the SQL path again',
    );
  });
}
