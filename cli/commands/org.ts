// pgvpd org: the orgs of org mode, kept in the catalog of the database --db names. The work is
// done by cli/operations/orgs.ts (the SQL validates and records; the operations create and drop
// a dedicated org's database); this command parses options, asks a person to confirm before data
// is deleted, and prints the results.
import { Argument, Option, type Command } from 'commander';
import { CliExit, operationAction } from '../cli-exit.js';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import {
  allowOrgRole,
  createOrg,
  disallowOrgRole,
  isOrgNameAvailable,
  listOrgs,
  planOrgPurge,
  purgeOrg,
  removeOrg,
  resumeOrg,
  setOrgPoolMode,
  showOrg,
  suspendOrg,
  type OrgRow,
  type OrgUserRow,
  type Placement,
} from '../operations/orgs.js';
import { readTerminalLine } from '../read-password.js';
import { renderTable } from '../table.js';

export function orgOption(): Option {
  return new Option('--org <org>', 'the org: its id or its database name').makeOptionMandatory();
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

interface CreateOptions extends ServerDbOptions {
  databaseName?: string;
  placement: Placement;
  server: string;
  targetDatabase?: string;
  template?: string;
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

function warn(io: CliIo, warnings: readonly string[]): void {
  for (const warning of warnings) io.err(`warning: ${warning}\n`);
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
    .action(
      operationAction(io, async (displayName: string, options: CreateOptions) => {
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
        const created = await withClient(url, (catalog) =>
          createOrg(catalog, {
            displayName,
            databaseName: options.databaseName,
            placement: options.placement,
            server: options.server,
            targetDatabase: options.targetDatabase,
            template: options.template,
            serverDb: options.serverDb,
            catalogUrl: url,
          }),
        );
        warn(io, created.warnings);
        if (created.createdDatabase !== null) {
          const { name, server } = created.createdDatabase;
          io.err(`created database ${name} on server ${server} and installed pgvpd in it\n`);
        }
        io.out(`${created.org.id}\n`);
      }),
    );

  org
    .command('list')
    .summary('list the orgs')
    .description('list the orgs: database name, display name, status, placement and user count')
    .option('--json', 'print a JSON array of pgvpd.orgs() rows instead of a table')
    .addOption(dbOption())
    .action(
      operationAction(io, async (options: JsonOptions) => {
        const url = connectionString(options);
        const rows = await withClient(url, listOrgs);
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
      }),
    );

  org
    .command('show')
    .summary('show one org and its users')
    .description('show one org, named by its id or its database name, and its users')
    .argument('<org>', 'the org: its id or its database name')
    .option('--json', 'print a JSON object, the pgvpd.orgs() row with a users array')
    .addOption(dbOption())
    .action(
      operationAction(io, async (ref: string, options: JsonOptions) => {
        const url = connectionString(options);
        const found = await withClient(url, (client) => showOrg(client, ref));
        if (options.json === true) {
          io.out(`${JSON.stringify(found, null, 2)}\n`);
          return;
        }
        const { users } = found;
        io.out(orgLines(found));
        io.out(users.length === 0 ? '\nno users\n' : `\nusers\n${usersTable(users)}`);
      }),
    );

  for (const [verb, change, state] of [
    ['suspend', suspendOrg, 'suspended'],
    ['resume', resumeOrg, 'active'],
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
      .action(
        operationAction(io, async (ref: string, options: DbOptions) => {
          const url = connectionString(options);
          const { org: found, changed } = await withClient(url, (client) => change(client, ref));
          const name = found.database_name;
          io.out(changed ? `org ${name} is now ${state}\n` : `org ${name} was ${state} already\n`);
        }),
      );
  }

  org
    .command('set-pool-mode')
    .summary('pool the org per session or per transaction')
    .description(
      "set how the proxy pools the org's sessions: session (a backend is the session's until it ends), transaction (a backend is the session's for one transaction at a time, and changes hands between them), or default (the proxy's pool_mode setting). The proxies apply it to the org's new sessions",
    )
    .argument('<org>', 'the org: its id or its database name')
    .addArgument(
      new Argument('<mode>', 'the pool mode').choices(['session', 'transaction', 'default']),
    )
    .addOption(dbOption())
    .action(
      operationAction(io, async (ref: string, mode: string, options: DbOptions) => {
        const url = connectionString(options);
        const changed = await withClient(url, (client) =>
          setOrgPoolMode(
            client,
            ref,
            mode === 'default' ? null : (mode as 'session' | 'transaction'),
          ),
        );
        const name = changed.org.database_name;
        io.out(
          changed.mode === null
            ? `org ${name} is pooled as the proxy's pool_mode setting says\n`
            : `org ${name} is pooled per ${changed.mode}\n`,
        );
      }),
    );

  org
    .command('remove')
    .summary('remove an org from the catalog, leaving its data')
    .description(
      'remove an org and its users from the catalog. Its rows, its database and the connect_as roles are left alone; pgvpd org purge deletes the data too',
    )
    .argument('<org>', 'the org: its id or its database name')
    .addOption(dbOption())
    .action(
      operationAction(io, async (ref: string, options: DbOptions) => {
        const url = connectionString(options);
        const removed = await withClient(url, (client) => removeOrg(client, ref));
        io.out(`removed org ${removed.database_name} from the catalog; its data was left alone\n`);
      }),
    );

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
    .action(
      operationAction(io, async (ref: string, options: PurgeOptions) => {
        const url = connectionString(options);
        await withClient(url, async (catalog) => {
          const access = { serverDb: options.serverDb, catalogUrl: url };
          const plan = await planOrgPurge(catalog, { org: ref, ...access });
          warn(io, plan.warnings);
          const { org: found, catalogDatabase: here, dropsDatabase: drops } = plan;
          const name = found.database_name;
          const consequences =
            `Purging org ${name} deletes its rows in every protected table of database ${here} and removes it and its users from the catalog` +
            (drops === null
              ? '.'
              : `, then drops its database ${drops.name} on server ${drops.server}.`);
          const confirmation = await confirmPurge(found, options, io, consequences);
          // The plan's warnings are the purge's too: said once, above.
          const purged = await purgeOrg(catalog, { org: found.id, confirmation, ...access });
          for (const { table, rows } of purged.deleted) {
            io.out(`deleted ${rows} row(s) from ${table}\n`);
          }
          io.out(`removed org ${name} and its users from the catalog\n`);
          const { database } = purged;
          if (database === null) return;
          if (database.error !== undefined) {
            io.err(
              `org ${name} is purged from the catalog, but its database ${database.name} was not dropped:\n`,
            );
            throw database.error;
          }
          io.out(
            database.dropped
              ? `dropped database ${database.name} on server ${database.server}\n`
              : `database ${database.name} on server ${database.server} did not exist\n`,
          );
        });
      }),
    );

  org
    .command('check-name')
    .summary('say whether a database name is free for a new org')
    .description(
      'say whether org create would accept this database name now: prints available (exit 0) or unavailable (exit 1: invalid, reserved or taken)',
    )
    .argument('<name>', 'the database name')
    .addOption(dbOption())
    .action(
      operationAction(io, async (name: string, options: DbOptions) => {
        const url = connectionString(options);
        const available = await withClient(url, (client) => isOrgNameAvailable(client, name));
        io.out(available ? 'available\n' : 'unavailable\n');
        if (!available) throw new CliExit(1);
      }),
    );

  // The connect_as roles an org's org tokens may choose (the HTTP control plane's allow-list).
  for (const [verb, change] of [
    ['allow-role', allowOrgRole],
    ['disallow-role', disallowOrgRole],
  ] as const) {
    const allow = verb === 'allow-role';
    org
      .command(verb)
      .summary(
        allow
          ? "let the org's API tokens choose a connect_as role"
          : "take a connect_as role off the org's API tokens' list",
      )
      .description(
        allow
          ? "let the org's org-scoped API tokens choose this role as connect_as (over HTTP, for users and invites). The role must exist, log in, and be neither superuser nor BYPASSRLS. Operator tokens and this CLI may use any such role"
          : "take a role off the connect_as roles the org's org-scoped API tokens may choose; users and invites that already use it are left alone",
      )
      .argument('<org>', 'the org: its id or its database name')
      .argument('<role>', 'the connect_as role')
      .addOption(dbOption())
      .action(
        operationAction(io, async (ref: string, role: string, options: DbOptions) => {
          const url = connectionString(options);
          const result = await withClient(url, (client) => change(client, ref, role));
          const name = result.org.database_name;
          const now = allow ? 'is now allowed' : 'is no longer allowed';
          const already = allow ? 'was allowed already' : 'was not allowed';
          io.out(`role ${role} ${result.changed ? now : already} for org ${name}'s tokens\n`);
          io.out(
            result.allowed.length === 0
              ? `org ${name}'s tokens may choose no connect_as role\n`
              : `allowed: ${result.allowed.join(', ')}\n`,
          );
        }),
      );
  }
}
