// pgvpd org create and purge with dedicated placement on a real second PostgreSQL cluster: the
// catalog lives on the run's cluster, the org's database is created (with pgvpd installed) on the
// second one through --server-db, never on the catalog's, and purge drops it there.
// (test/cli/org-servers.test.ts covers the same commands with both servers on one cluster.)
import t from 'tap';
import { createTestDatabase } from '../support/postgres.js';
import { connect, installPgvpd } from '../support/pgvpd.js';
import { secondCluster } from '../support/second-cluster.js';
import { pgvpd } from './run-cli.js';

const second = await secondCluster(t);
const db = await createTestDatabase(t);
await installPgvpd(db);

const secondAdmin = await connect(second.adminUrl);
t.teardown(() => secondAdmin.end());

function onSecond(database: string): string {
  const url = new URL(second.adminUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

interface Queryable {
  query: (sql: string, values: unknown[]) => Promise<{ rowCount: number | null }>;
}

async function exists(client: Queryable, name: string): Promise<boolean> {
  const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
  return rowCount === 1;
}

const name = `pgvpd_t_second_${String(process.pid)}`;

t.test('server add names the second cluster', async (t) => {
  t.same(
    await pgvpd(
      'server',
      'add',
      'second',
      '--host',
      second.host,
      '--port',
      String(second.port),
      '--db',
      db.url,
    ),
    {
      code: 0,
      out: `added server second (${second.host}:${String(second.port)}, tls disable)\n`,
      err: '',
    },
  );
});

t.test('org create --server-db creates the database on the second cluster only', async (t) => {
  const result = await pgvpd(
    'org',
    'create',
    'Second Co',
    '--database-name',
    'second-co',
    '--target-database',
    name,
    '--placement',
    'dedicated',
    '--server',
    'second',
    '--server-db',
    second.adminUrl,
    '--db',
    db.url,
  );
  t.equal(result.code, 0, result.err);
  t.equal(result.err, `created database ${name} on server second and installed pgvpd in it\n`);
  const id = result.out.trim();
  t.ok(await exists(secondAdmin, name), 'the database is on the second cluster');
  t.notOk(await exists(db, name), 'and not on the catalog cluster');
  const { rows } = await db.query(
    'select server_name, target_database, placement from pgvpd.orgs() where id = $1',
    [id],
  );
  t.same(rows, [{ server_name: 'second', target_database: name, placement: 'dedicated' }]);

  const there = await connect(onSecond(name));
  t.teardown(() => there.end());
  const { rows: installed } = await there.query<{ server_port: number; version: string }>(
    'select inet_server_port() as server_port, pgvpd.version() as version',
  );
  t.match(installed, [{ server_port: second.port, version: /^\d/ }], 'pgvpd is installed there');
});

t.test('org purge --server-db drops the database on the second cluster', async (t) => {
  t.same(
    await pgvpd(
      'org',
      'purge',
      'second-co',
      '--yes-i-mean-it',
      'second-co',
      '--server-db',
      second.adminUrl,
      '--db',
      db.url,
    ),
    {
      code: 0,
      out: `removed org second-co and its users from the catalog\ndropped database ${name} on server second\n`,
      err: '',
    },
  );
  t.notOk(await exists(secondAdmin, name), 'gone from the second cluster');
  const { rows } = await db.query("select 1 from pgvpd.orgs() where database_name = 'second-co'");
  t.same(rows, []);
});
