// pgvpd server (add, list, remove) and pgvpd org with dedicated placement: the CLI creates the
// org's database on its server, installs pgvpd in it, and only then records the org; purge drops
// that database again. A failed step leaves neither a catalog row nor a database behind.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { createTestDatabase, type TestLike } from '../support/postgres.js';
import { connect, installPgvpd } from '../support/pgvpd.js';
import { pgvpd } from './run-cli.js';

const db = await createTestDatabase(t);
await installPgvpd(db);

const { host, port } = db.server;

/** A database name unique to this run (databases are cluster-wide), dropped at the test's end. */
function databaseName(t: TestLike, stem: string): string {
  const name = `pgvpd_t_${stem}_${String(process.pid)}_${randomBytes(3).toString('hex')}`;
  t.teardown(async () => {
    await db.query('drop database if exists ' + name + ' with (force)');
  });
  return name;
}

async function databaseExists(name: string): Promise<boolean> {
  const { rowCount } = await db.query('select 1 from pg_database where datname = $1', [name]);
  return rowCount === 1;
}

async function orgCount(): Promise<number> {
  const { rows } = await db.query<{ n: number }>('select count(*)::int as n from pgvpd.orgs()');
  return rows[0]!.n;
}

/** The URL of another database on the test server, with the test's superuser credentials. */
function urlOf(database: string): string {
  const url = new URL(db.url);
  url.pathname = `/${database}`;
  return url.toString();
}

t.test('server list shows the built-in default server', async (t) => {
  t.same(await pgvpd('server', 'list', '--db', db.url), {
    code: 0,
    out: [
      'name     host                    port  tls  orgs',
      '-------  ----------------------  ----  ---  ----',
      "default  (the proxy's upstream)             0",
      '',
    ].join('\n'),
    err: '',
  });
});

t.test('server add names a server, with port 5432 and tls disable by default', async (t) => {
  t.same(
    await pgvpd(
      'server',
      'add',
      'eu-1',
      '--host',
      'pg-eu-1.internal',
      '--port',
      '6432',
      '--tls',
      'verify-full',
      '--db',
      db.url,
    ),
    { code: 0, out: 'added server eu-1 (pg-eu-1.internal:6432, tls verify-full)\n', err: '' },
  );
  t.same(await pgvpd('server', 'add', 'us-1', '--host', '10.0.0.7', '--db', db.url), {
    code: 0,
    out: 'added server us-1 (10.0.0.7:5432, tls disable)\n',
    err: '',
  });
  t.same(await pgvpd('server', 'list', '--db', db.url), {
    code: 0,
    out: [
      'name     host                    port  tls          orgs',
      '-------  ----------------------  ----  -----------  ----',
      "default  (the proxy's upstream)                     0",
      'eu-1     pg-eu-1.internal        6432  verify-full  0',
      'us-1     10.0.0.7                5432  disable      0',
      '',
    ].join('\n'),
    err: '',
  });
});

t.test('server list --json prints the pgvpd.servers() rows', async (t) => {
  const result = await pgvpd('server', 'list', '--json', '--db', db.url);
  t.equal(result.code, 0);
  t.match(JSON.parse(result.out), [
    { name: 'default', host: null, port: null, tls: 'disable', org_count: 0 },
    { name: 'eu-1', host: 'pg-eu-1.internal', port: 6432, tls: 'verify-full', org_count: 0 },
    { name: 'us-1', host: '10.0.0.7', port: 5432, tls: 'disable', org_count: 0 },
  ]);
});

t.test('server add refuses bad names, ports, tls modes and duplicates', async (t) => {
  t.same(await pgvpd('server', 'add', 'EU', '--host', 'h', '--db', db.url), {
    code: 1,
    out: '',
    err:
      "error: pgvpd: invalid server name 'EU' (SQLSTATE 22023)\n" +
      'hint: server names match ^[a-z0-9][a-z0-9_-]{0,62}$\n',
  });
  t.same(await pgvpd('server', 'add', 'eu-1', '--host', 'h', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: pgvpd: server 'eu-1' already exists (SQLSTATE 23505)\n",
  });
  t.same(await pgvpd('server', 'add', 'x', '--host', 'h', '--port', '70000', '--db', db.url), {
    code: 1,
    out: '',
    err: 'error: pgvpd: port must be between 1 and 65535 (SQLSTATE 22023)\n',
  });
  t.same(await pgvpd('server', 'add', 'x', '--host', 'h', '--port', 'five', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: option '--port <port>' argument 'five' is invalid. a port is a number, 1 to 65535\n",
  });
  const tls = await pgvpd('server', 'add', 'x', '--host', 'h', '--tls', 'prefer', '--db', db.url);
  t.equal(tls.code, 1);
  t.match(
    tls.err,
    /argument 'prefer' is invalid. Allowed choices are disable, require, verify-full/,
  );
  t.same(await pgvpd('server', 'add', 'x', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: required option '--host <host>' not specified\n",
  });
});

t.test('server remove refuses default and unknown servers, then removes', async (t) => {
  t.same(await pgvpd('server', 'remove', 'default', '--db', db.url), {
    code: 1,
    out: '',
    err: 'error: pgvpd: server default is built in and cannot be removed (SQLSTATE 42939)\n',
  });
  t.same(await pgvpd('server', 'remove', 'nope', '--db', db.url), {
    code: 1,
    out: '',
    err: "error: pgvpd: no server 'nope' (SQLSTATE 42704)\n",
  });
  t.same(await pgvpd('server', 'remove', 'us-1', '--db', db.url), {
    code: 0,
    out: 'removed server us-1\n',
    err: '',
  });
  const { rows } = await db.query('select name from pgvpd.servers()');
  t.same(rows, [{ name: 'default' }, { name: 'eu-1' }]);
});

t.test('org create --placement dedicated creates the database with pgvpd in it', async (t) => {
  const name = databaseName(t, 'ded');
  const result = await pgvpd(
    'org',
    'create',
    'Dedicated Co',
    '--database-name',
    name.replace(/_/g, '-'),
    '--target-database',
    name,
    '--placement',
    'dedicated',
    '--db',
    db.url,
  );
  t.equal(result.code, 0, result.err);
  t.equal(result.err, `created database ${name} on server default and installed pgvpd in it\n`);
  const id = result.out.trim();
  const { rows } = await db.query('select * from pgvpd.orgs() where id = $1', [id]);
  t.match(rows, [
    {
      database_name: name.replace(/_/g, '-'),
      placement: 'dedicated',
      server_name: 'default',
      target_database: name,
    },
  ]);
  const client = await connect(urlOf(name));
  t.teardown(() => client.end());
  const installed = await client.query<{ version: string }>('select pgvpd.version() as version');
  t.match(installed.rows, [{ version: /^\d/ }], 'pgvpd is installed in the new database');
  const { rows: template } = await client.query<{ n: number }>(
    "select count(*)::int as n from pg_class where relname = 'docs' and relnamespace = 'public'::regnamespace",
  );
  t.same(template, [{ n: 0 }]);
});

t.test(
  'org create --placement dedicated names the database after the org by default',
  async (t) => {
    const name = databaseName(t, 'plain');
    const result = await pgvpd(
      'org',
      'create',
      'Plain',
      '--database-name',
      name,
      '--placement',
      'dedicated',
      '--db',
      db.url,
    );
    t.equal(result.code, 0, result.err);
    t.ok(await databaseExists(name));
    const { rows } = await db.query(
      'select target_database from pgvpd.orgs() where database_name = $1',
      [name],
    );
    t.same(rows, [{ target_database: name }]);
  },
);

t.test('dedicated placement with --template copies that template', async (t) => {
  const template = databaseName(t, 'tpl');
  await db.query(`create database ${template} template template0`);
  const source = await connect(urlOf(template));
  await source.query('create table public.seeded (id int)');
  await source.end();
  const name = databaseName(t, 'fromtpl');
  const result = await pgvpd(
    'org',
    'create',
    'From Template',
    '--database-name',
    name,
    '--placement',
    'dedicated',
    '--template',
    template,
    '--db',
    db.url,
  );
  t.equal(result.code, 0, result.err);
  const client = await connect(urlOf(name));
  const { rows } = await client.query("select to_regclass('public.seeded') is not null as seeded");
  await client.end();
  t.same(rows, [{ seeded: true }]);
});

t.test('a dedicated org on a server with its own address needs --server-db', async (t) => {
  const before = await orgCount();
  const name = databaseName(t, 'eu');
  t.same(
    await pgvpd(
      'org',
      'create',
      'Euro',
      '--database-name',
      name,
      '--placement',
      'dedicated',
      '--server',
      'eu-1',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: "error: the org's database is on server eu-1 (pg-eu-1.internal:6432): pass --server-db <url>, a superuser connection string for that server\n",
    },
  );
  t.equal(await orgCount(), before, 'no org recorded');
  t.notOk(await databaseExists(name));
});

t.test('--server-db creates the database on the named server', async (t) => {
  t.same(
    await pgvpd('server', 'add', 'local', '--host', host, '--port', String(port), '--db', db.url),
    { code: 0, out: `added server local (${host}:${String(port)}, tls disable)\n`, err: '' },
  );
  const name = databaseName(t, 'local');
  const result = await pgvpd(
    'org',
    'create',
    'Local',
    '--database-name',
    name,
    '--placement',
    'dedicated',
    '--server',
    'local',
    '--server-db',
    urlOf('postgres'),
    '--db',
    db.url,
  );
  t.equal(result.code, 0, result.err);
  t.equal(result.err, `created database ${name} on server local and installed pgvpd in it\n`);
  t.ok(await databaseExists(name));
  t.same(await pgvpd('server', 'remove', 'local', '--db', db.url), {
    code: 1,
    out: '',
    err:
      "error: pgvpd: server 'local' still holds 1 org(s) (SQLSTATE 55006)\n" +
      'hint: remove those orgs, or place them elsewhere, first\n',
  });
});

t.test('--server-db that leads elsewhere than the catalog says so on stderr', async (t) => {
  const name = databaseName(t, 'warn');
  const result = await pgvpd(
    'org',
    'create',
    'Warned',
    '--database-name',
    name,
    '--placement',
    'dedicated',
    '--server',
    'eu-1',
    '--server-db',
    urlOf('postgres'),
    '--db',
    db.url,
  );
  t.equal(result.code, 0);
  t.equal(
    result.err,
    `warning: --server-db leads to ${host}:${String(port)}, the catalog has server eu-1 at pg-eu-1.internal:6432\n` +
      `created database ${name} on server eu-1 and installed pgvpd in it\n`,
  );
});

t.test('a database that exists already is not taken over, and nothing is recorded', async (t) => {
  const before = await orgCount();
  t.same(
    await pgvpd(
      'org',
      'create',
      'Squatter',
      '--database-name',
      'squatter',
      '--target-database',
      db.name,
      '--placement',
      'dedicated',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: `error: database "${db.name}" already exists (SQLSTATE 42P04)\n`,
    },
  );
  t.equal(await orgCount(), before);
  t.ok(await databaseExists(db.name), 'the existing database is left alone');
});

t.test(
  'when installing pgvpd fails, the new database is dropped and nothing recorded',
  async (t) => {
    // A template whose pgvpd.version() has another return type: setup.sql fails on it.
    const template = databaseName(t, 'badtpl');
    await db.query(`create database ${template} template template0`);
    const source = await connect(urlOf(template));
    await source.query('create schema pgvpd');
    await source.query(
      'create function pgvpd.version() returns int language sql as $$ select 1 $$',
    );
    await source.end();
    const before = await orgCount();
    const name = databaseName(t, 'broken');
    const result = await pgvpd(
      'org',
      'create',
      'Broken',
      '--database-name',
      name,
      '--placement',
      'dedicated',
      '--template',
      template,
      '--db',
      db.url,
    );
    t.equal(result.code, 1);
    t.equal(
      result.err,
      'error: cannot change return type of existing function (SQLSTATE 42P13)\n' +
        'hint: Use DROP FUNCTION pgvpd.version() first.\n',
    );
    t.equal(await orgCount(), before, 'no org recorded');
    t.notOk(await databaseExists(name), 'the database it created is gone');
  },
);

t.test('an unknown template fails with 3D000 and records nothing', async (t) => {
  const before = await orgCount();
  const name = databaseName(t, 'notpl');
  t.same(
    await pgvpd(
      'org',
      'create',
      'No Template',
      '--database-name',
      name,
      '--placement',
      'dedicated',
      '--template',
      'pgvpd_no_such_template',
      '--db',
      db.url,
    ),
    {
      code: 1,
      out: '',
      err: 'error: template database "pgvpd_no_such_template" does not exist (SQLSTATE 3D000)\n',
    },
  );
  t.equal(await orgCount(), before);
});

t.test('org purge of a dedicated org drops its database after the catalog purge', async (t) => {
  const name = databaseName(t, 'purged');
  const created = await pgvpd(
    'org',
    'create',
    'Purged',
    '--database-name',
    name,
    '--placement',
    'dedicated',
    '--db',
    db.url,
  );
  t.equal(created.code, 0, created.err);
  const id = created.out.trim();
  // A session still on the database does not stop the drop.
  const lingering = await connect(urlOf(name));
  t.teardown(() => lingering.end().catch(() => undefined));
  t.same(await pgvpd('org', 'purge', name, '--yes-i-mean-it', name, '--db', db.url), {
    code: 0,
    out: `removed org ${name} and its users from the catalog\ndropped database ${name} on server default\n`,
    err: '',
  });
  t.notOk(await databaseExists(name));
  const { rows } = await db.query('select 1 from pgvpd.orgs() where id = $1', [id]);
  t.same(rows, []);
});

t.test('org purge of a dedicated org on another server needs --server-db first', async (t) => {
  const name = databaseName(t, 'remote');
  const created = await pgvpd(
    'org',
    'create',
    'Remote',
    '--database-name',
    name,
    '--placement',
    'dedicated',
    '--server',
    'local',
    '--server-db',
    urlOf('postgres'),
    '--db',
    db.url,
  );
  t.equal(created.code, 0, created.err);
  t.same(await pgvpd('org', 'purge', name, '--yes-i-mean-it', name, '--db', db.url), {
    code: 1,
    out: '',
    err: `error: the org's database is on server local (${host}:${String(port)}): pass --server-db <url>, a superuser connection string for that server\n`,
  });
  t.ok(await databaseExists(name), 'nothing purged');
  t.same(
    await pgvpd(
      'org',
      'purge',
      name,
      '--yes-i-mean-it',
      name,
      '--server-db',
      urlOf('postgres'),
      '--db',
      db.url,
    ),
    {
      code: 0,
      out: `removed org ${name} and its users from the catalog\ndropped database ${name} on server local\n`,
      err: '',
    },
  );
  t.notOk(await databaseExists(name));
});

t.test('org purge of a dedicated org whose database is gone says so', async (t) => {
  const name = databaseName(t, 'gone');
  const created = await pgvpd(
    'org',
    'create',
    'Gone',
    '--database-name',
    name,
    '--placement',
    'dedicated',
    '--db',
    db.url,
  );
  t.equal(created.code, 0, created.err);
  await db.query(`drop database ${name} with (force)`);
  t.same(await pgvpd('org', 'purge', name, '--yes-i-mean-it', name, '--db', db.url), {
    code: 0,
    out: `removed org ${name} and its users from the catalog\ndatabase ${name} on server default did not exist\n`,
    err: '',
  });
});

t.test('server subcommands explain themselves in --help', async (t) => {
  for (const [args, usage, says] of [
    [['server'], 'pgvpd server [options] [command]', /proxy's\s+own\s+upstream/],
    [['server', 'add'], 'pgvpd server add [options] <name>', /--tls <mode>/],
    [['server', 'list'], 'pgvpd server list [options]', /--json/],
    [['server', 'remove'], 'pgvpd server remove [options] <name>', /refused\s+while\s+an\s+org/],
  ] as const) {
    const result = await pgvpd(...args, '--help');
    t.equal(result.code, 0, args.join(' '));
    t.match(result.out, `Usage: ${usage}\n`);
    t.match(result.out, says);
  }
});
