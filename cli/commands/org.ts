// pgvpd org: the orgs of org mode, kept in the catalog of the database --db names (pgvpd.org_*
// functions, pgvpd_admin's). The SQL validates and records; the CLI adds what a function cannot
// do: CREATE DATABASE (not allowed inside a transaction block, so not inside a function) for a
// dedicated org and pgvpd's SQL in it, DROP DATABASE when such an org is purged, and the
// confirmation a person must give before data is deleted.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import { CliExit } from '../cli-exit.js';
import {
  connectionString,
  dbOption,
  endpointOf,
  queryOne,
  withClient,
  type DbOptions,
} from '../database.js';
import type { CliIo } from '../io.js';
import { packageRoot } from '../package-root.js';
import { readTerminalLine } from '../read-password.js';
import { renderTable } from '../table.js';

/** A row of pgvpd.orgs(). */
export interface OrgRow {
  id: string;
  database_name: string;
  display_name: string | null;
  status: string;
  placement: string;
  server_name: string;
  target_database: string;
  user_count: number;
  created_at: Date;
}

/** A row of pgvpd.org_users(). */
export interface OrgUserRow {
  username: string;
  connect_as: string;
  created_at: Date;
}

interface ServerRow {
  name: string;
  host: string | null;
  port: number | null;
}

/**
 * The org an argument names: its id, or its database name (what people type). An org's database
 * name defaults to its id, and an id match wins should the two ever name different orgs.
 */
export async function resolveOrg(client: pg.Client, ref: string): Promise<OrgRow> {
  const { rows } = await client.query<OrgRow>(
    `select o.* from pgvpd.orgs() o
      where o.id::text = lower($1) or o.database_name = $1
      order by o.id::text = lower($1) desc
      limit 1`,
    [ref],
  );
  const [org] = rows;
  if (org === undefined) {
    throw new CliExit(
      1,
      `no org ${JSON.stringify(ref)}: name an org by its id or its database name (pgvpd org list)`,
    );
  }
  return org;
}

export function orgOption(): Option {
  return new Option('--org <org>', 'the org: its id or its database name').makeOptionMandatory();
}

const connectTimeoutMs = 10_000;

/** A client for `database` on the server `url` leads to, with url's credentials and settings. */
async function withDatabase<T>(
  url: string,
  database: string,
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({
    ...parseIntoClientConfig(url),
    database,
    connectionTimeoutMillis: connectTimeoutMs,
    application_name: 'pgvpd-cli',
  });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

interface ServerDbOptions extends DbOptions {
  serverDb?: string;
}

function serverDbOption(): Option {
  return new Option(
    '--server-db <url>',
    "superuser connection string on the org's server, for CREATE/DROP DATABASE (required when that server is not default; default: --db)",
  );
}

/**
 * The connection string on which to create or drop a dedicated org's database: --server-db when
 * given, else --db for the built-in server `default` (the proxy's upstream, taken to be the
 * server the catalog lives on). A server with its own host and port needs --server-db.
 */
async function serverAdminUrl(
  catalog: pg.Client,
  serverName: string,
  options: ServerDbOptions,
  io: CliIo,
): Promise<string> {
  const { rows } = await catalog.query<ServerRow>(
    'select s.name, s.host, s.port from pgvpd.servers() s where s.name = $1',
    [serverName],
  );
  const [server] = rows;
  if (server === undefined) throw new CliExit(1, `no server ${JSON.stringify(serverName)}`);
  const at = server.host === null ? undefined : `${server.host}:${String(server.port ?? '')}`;
  if (options.serverDb !== undefined && options.serverDb !== '') {
    if (at !== undefined) {
      const { host, port } = endpointOf(options.serverDb);
      if (host.toLowerCase() !== server.host?.toLowerCase() || port !== server.port) {
        io.err(
          `warning: --server-db leads to ${host}:${String(port)}, the catalog has server ${server.name} at ${at}\n`,
        );
      }
    }
    return options.serverDb;
  }
  if (at === undefined) return connectionString(options);
  throw new CliExit(
    1,
    `the org's database is on server ${server.name} (${at}): pass --server-db <url>, a superuser connection string for that server`,
  );
}

async function serverVersionNum(client: pg.Client): Promise<number> {
  const row = await queryOne<{ num: number }>(
    client,
    "select current_setting('server_version_num')::int as num",
  );
  return row.num;
}

/** DROP DATABASE, ending the sessions still on it (WITH (FORCE), PostgreSQL 13 and later). */
async function dropDatabase(adminUrl: string, name: string): Promise<boolean> {
  return withClient(adminUrl, async (client) => {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (rowCount === 0) return false;
    const force = (await serverVersionNum(client)) >= 130000 ? ' with (force)' : '';
    await client.query(`drop database ${client.escapeIdentifier(name)}${force}`);
    return true;
  });
}

function setupSql(): string {
  const path = join(packageRoot, 'sql', 'setup.sql');
  if (!existsSync(path)) throw new CliExit(1, `pgvpd's SQL is missing: ${path}`);
  return readFileSync(path, 'utf8');
}

interface CreateOptions extends ServerDbOptions {
  databaseName?: string;
  placement: 'shared' | 'dedicated';
  server: string;
  targetDatabase?: string;
  template?: string;
}

/**
 * A dedicated org: the catalog row is written in a transaction that commits only once its
 * database exists with pgvpd installed, so the catalog never names a database that is not there.
 * org_create runs first and checks everything it can (name, server, database not in use) before
 * anything is created; a database this command created is dropped again when a later step fails.
 */
async function createDedicated(
  catalog: pg.Client,
  displayName: string,
  options: CreateOptions,
  io: CliIo,
): Promise<string> {
  await catalog.query('begin');
  try {
    const { id } = await queryOne<{ id: string }>(
      catalog,
      'select pgvpd.org_create($1, $2, $3, $4, $5) as id',
      [
        displayName,
        options.databaseName ?? null,
        'dedicated',
        options.server,
        options.targetDatabase ?? null,
      ],
    );
    const org = await queryOne<{ target_database: string; server_name: string }>(
      catalog,
      'select o.target_database, o.server_name from pgvpd.orgs() o where o.id = $1',
      [id],
    );
    const adminUrl = await serverAdminUrl(catalog, org.server_name, options, io);
    const sql = setupSql();
    const template = options.template ?? 'template0';
    await withClient(adminUrl, (client) =>
      client.query(
        `create database ${client.escapeIdentifier(org.target_database)} template ${client.escapeIdentifier(template)}`,
      ),
    );
    try {
      await withDatabase(adminUrl, org.target_database, (client) => client.query(sql));
      await catalog.query('commit');
    } catch (error) {
      await dropDatabase(adminUrl, org.target_database).catch((dropError: unknown) => {
        const reason = dropError instanceof Error ? dropError.message : String(dropError);
        io.err(
          `warning: could not drop database ${org.target_database}, which this command created (${reason}): drop it yourself\n`,
        );
      });
      throw error;
    }
    io.err(
      `created database ${org.target_database} on server ${org.server_name} and installed pgvpd in it\n`,
    );
    return id;
  } catch (error) {
    await catalog.query('rollback').catch(() => undefined);
    throw error;
  }
}

function orgLines(org: OrgRow): string {
  const fields: [string, string][] = [
    ['id', org.id],
    ['database_name', org.database_name],
    ['display_name', org.display_name ?? ''],
    ['status', org.status],
    ['placement', org.placement],
    ['server', org.server_name],
    ['target_database', org.target_database],
    ['created_at', org.created_at.toISOString()],
  ];
  const width = Math.max(...fields.map(([name]) => name.length));
  return (
    fields.map(([name, value]) => `${name.padEnd(width)}  ${value}`.trimEnd()).join('\n') + '\n'
  );
}

export function usersTable(users: readonly OrgUserRow[]): string {
  return renderTable(
    users.map((user) => ({ ...user, created_at: user.created_at.toISOString() })),
    ['username', 'connect_as', 'created_at'],
  );
}

interface JsonOptions extends DbOptions {
  json?: boolean;
}

interface PurgeOptions extends ServerDbOptions {
  yesIMeanIt?: string;
}

/** The org's database name, as typed by the person running the command or given by flag. */
async function confirmPurge(
  org: OrgRow,
  options: PurgeOptions,
  io: CliIo,
  consequences: string,
): Promise<string> {
  const name = org.database_name;
  if (options.yesIMeanIt !== undefined) {
    if (options.yesIMeanIt !== name) {
      throw new CliExit(
        1,
        `--yes-i-mean-it ${JSON.stringify(options.yesIMeanIt)} is not the database name of org ${org.id}: nothing was purged`,
      );
    }
    return name;
  }
  const typed = await readTerminalLine(
    io,
    `${consequences}\nThis cannot be undone. Type the org's database name (${name}) to confirm: `,
  );
  if (typed === undefined) {
    throw new CliExit(
      1,
      `purging org ${name} deletes its data for good: confirm on a terminal, or pass --yes-i-mean-it ${name}`,
    );
  }
  if (typed.trim() !== name)
    throw new CliExit(1, 'that is not the database name: nothing was purged');
  return name;
}

export function register(program: Command, io: CliIo): void {
  const org = program
    .command('org')
    .summary('manage the orgs of org mode')
    .description(
      'manage the orgs of org mode in the catalog of --db: each org is reached by its database name and has its own users; its data lives in a shared database under row level security, or in a database of its own',
    );

  org
    .command('create')
    .summary('add an org and print its id')
    .description(
      "add an org and print its id. Placement shared (default): the org's rows live, under row level security, in --target-database (default: the catalog's database). Placement dedicated: the org gets a database of its own, which this command creates (from --template) on the org's server and installs pgvpd in, before it records the org",
    )
    .argument('<display-name>', 'the name people read, e.g. "Acme Inc"')
    .option(
      '--database-name <name>',
      'what clients put in their connection string, ^[a-z0-9][a-z0-9_-]{0,62}$ (default: the org id)',
    )
    .addOption(
      new Option('--placement <placement>', 'where its data lives')
        .choices(['shared', 'dedicated'])
        .default('shared'),
    )
    .option('--server <name>', 'the server its database is on (pgvpd server list)', 'default')
    .option(
      '--target-database <db>',
      'the database its data lives in (default: shared, the catalog database; dedicated, the database name)',
    )
    .option('--template <db>', 'dedicated: template of the new database (default: template0)')
    .addOption(serverDbOption())
    .addOption(dbOption())
    .action(async (displayName: string, options: CreateOptions) => {
      const url = connectionString(options);
      if (options.placement === 'shared') {
        for (const [flag, value] of [
          ['--template', options.template],
          ['--server-db', options.serverDb],
        ] as const) {
          if (value !== undefined) {
            throw new CliExit(
              1,
              `${flag} is for dedicated placement: a shared org's database exists already`,
            );
          }
        }
      }
      const id = await withClient(url, async (catalog) => {
        if (options.placement === 'dedicated') {
          return createDedicated(catalog, displayName, options, io);
        }
        const row = await queryOne<{ id: string }>(
          catalog,
          'select pgvpd.org_create($1, $2, $3, $4, $5) as id',
          [
            displayName,
            options.databaseName ?? null,
            'shared',
            options.server,
            options.targetDatabase ?? null,
          ],
        );
        return row.id;
      });
      io.out(`${id}\n`);
    });

  org
    .command('list')
    .summary('list the orgs')
    .description('list the orgs: database name, display name, status, placement and user count')
    .option('--json', 'print a JSON array of pgvpd.orgs() rows instead of a table')
    .addOption(dbOption())
    .action(async (options: JsonOptions) => {
      const url = connectionString(options);
      const rows = await withClient(url, async (client) => {
        const result = await client.query<OrgRow>('select * from pgvpd.orgs()');
        return result.rows;
      });
      if (options.json === true) {
        io.out(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (rows.length === 0) {
        io.out('no orgs\n');
        return;
      }
      io.out(
        renderTable(
          rows.map((row) => ({ ...row, server: row.server_name, users: row.user_count })),
          [
            'database_name',
            'display_name',
            'status',
            'placement',
            'server',
            'target_database',
            'users',
            'id',
          ],
        ),
      );
    });

  org
    .command('show')
    .summary('show one org and its users')
    .description('show one org, named by its id or its database name, and its users')
    .argument('<org>', 'the org: its id or its database name')
    .option('--json', 'print a JSON object, the pgvpd.orgs() row with a users array')
    .addOption(dbOption())
    .action(async (ref: string, options: JsonOptions) => {
      const url = connectionString(options);
      const { found, users } = await withClient(url, async (client) => {
        const row = await resolveOrg(client, ref);
        const result = await client.query<OrgUserRow>('select * from pgvpd.org_users($1)', [
          row.id,
        ]);
        return { found: row, users: result.rows };
      });
      if (options.json === true) {
        io.out(`${JSON.stringify({ ...found, users }, null, 2)}\n`);
        return;
      }
      io.out(orgLines(found));
      io.out(users.length === 0 ? '\nno users\n' : `\nusers\n${usersTable(users)}`);
    });

  for (const [verb, fn, state] of [
    ['suspend', 'org_suspend', 'suspended'],
    ['resume', 'org_resume', 'active'],
  ] as const) {
    org
      .command(verb)
      .summary(
        verb === 'suspend' ? 'refuse new sessions of an org' : 'let a suspended org in again',
      )
      .description(
        verb === 'suspend'
          ? 'suspend an org: the proxy refuses its new sessions (its data and users stay)'
          : 'resume a suspended org: the proxy accepts its sessions again',
      )
      .argument('<org>', 'the org: its id or its database name')
      .addOption(dbOption())
      .action(async (ref: string, options: DbOptions) => {
        const url = connectionString(options);
        const { name, changed } = await withClient(url, async (client) => {
          const row = await resolveOrg(client, ref);
          const result = await queryOne<{ changed: boolean }>(
            client,
            `select pgvpd.${fn}($1) as changed`,
            [row.id],
          );
          return { name: row.database_name, changed: result.changed };
        });
        io.out(changed ? `org ${name} is now ${state}\n` : `org ${name} was ${state} already\n`);
      });
  }

  org
    .command('remove')
    .summary('remove an org from the catalog, leaving its data')
    .description(
      'remove an org and its users from the catalog. Its rows, its database and the connect_as roles are left alone; pgvpd org purge deletes the data too',
    )
    .argument('<org>', 'the org: its id or its database name')
    .addOption(dbOption())
    .action(async (ref: string, options: DbOptions) => {
      const url = connectionString(options);
      const name = await withClient(url, async (client) => {
        const row = await resolveOrg(client, ref);
        await client.query('select pgvpd.org_remove($1)', [row.id]);
        return row.database_name;
      });
      io.out(`removed org ${name} from the catalog; its data was left alone\n`);
    });

  org
    .command('purge')
    .summary("delete an org's data and remove it")
    .description(
      "delete an org's data for good: its rows in every table pgvpd protects in the catalog's database (pgvpd.org_purge_rows), its catalog entry and users, and for dedicated placement its database. Asks for the org's database name on the terminal, or takes it from --yes-i-mean-it",
    )
    .argument('<org>', 'the org: its id or its database name')
    .option(
      '--yes-i-mean-it <database-name>',
      'confirm without a terminal: the database name of the org',
    )
    .addOption(serverDbOption())
    .addOption(dbOption())
    .action(async (ref: string, options: PurgeOptions) => {
      const url = connectionString(options);
      await withClient(url, async (catalog) => {
        const found = await resolveOrg(catalog, ref);
        const { here } = await queryOne<{ here: string }>(
          catalog,
          'select current_database() as here',
        );
        const name = found.database_name;
        if (
          found.placement === 'shared' &&
          (found.server_name !== 'default' || found.target_database !== here)
        ) {
          throw new CliExit(
            1,
            `org ${name}'s rows live in database ${found.target_database} on server ${found.server_name}, not in the catalog's database ${here}: pgvpd cannot purge them from here. Delete them there, then run pgvpd org remove ${name}`,
          );
        }
        const adminUrl =
          found.placement === 'dedicated'
            ? await serverAdminUrl(catalog, found.server_name, options, io)
            : undefined;
        const consequences =
          `Purging org ${name} deletes its rows in every protected table of database ${here} and removes it and its users from the catalog` +
          (adminUrl === undefined
            ? '.'
            : `, then drops its database ${found.target_database} on server ${found.server_name}.`);
        const confirmation = await confirmPurge(found, options, io, consequences);
        const { rows } = await catalog.query<{ table_name: string; rows_deleted: string }>(
          // Schema-qualified always: regclass::text drops the schema of tables on search_path.
          `select format('%I.%I', n.nspname, c.relname) as table_name, p.rows_deleted
             from pgvpd.org_purge_rows($1, $2) with ordinality p
             join pg_catalog.pg_class c on c.oid = p.table_name
             join pg_catalog.pg_namespace n on n.oid = c.relnamespace
            order by p.ordinality`,
          [found.id, confirmation],
        );
        for (const row of rows) {
          io.out(`deleted ${row.rows_deleted} row(s) from ${row.table_name}\n`);
        }
        io.out(`removed org ${name} and its users from the catalog\n`);
        if (adminUrl === undefined) return;
        try {
          const dropped = await dropDatabase(adminUrl, found.target_database);
          io.out(
            dropped
              ? `dropped database ${found.target_database} on server ${found.server_name}\n`
              : `database ${found.target_database} on server ${found.server_name} did not exist\n`,
          );
        } catch (error) {
          io.err(
            `org ${name} is purged from the catalog, but its database ${found.target_database} was not dropped:\n`,
          );
          throw error;
        }
      });
    });

  org
    .command('check-name')
    .summary('say whether a database name is free for a new org')
    .description(
      'say whether org create would accept this database name now: prints available (exit 0) or unavailable (exit 1: invalid, reserved or taken)',
    )
    .argument('<name>', 'the database name')
    .addOption(dbOption())
    .action(async (name: string, options: DbOptions) => {
      const url = connectionString(options);
      const { available } = await withClient(url, (client) =>
        queryOne<{ available: boolean }>(
          client,
          'select pgvpd.org_name_available($1) as available',
          [name],
        ),
      );
      io.out(available ? 'available\n' : 'unavailable\n');
      if (!available) throw new CliExit(1);
    });
}
