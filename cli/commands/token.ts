// pgvpd token: the API tokens of the HTTP control plane. The work is done by
// cli/operations/tokens.ts (pgvpd.token_* functions); this command parses options and prints.
// `token create` prints the token on stdout, alone on its line, the one time it can be read (the
// catalog keeps only its hash): this is how the first operator token is made.
import { Option, type Command } from 'commander';
import { CliExit, operationAction } from '../cli-exit.js';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import {
  createToken,
  listTokens,
  revokeToken,
  tokenScopes,
  type TokenScope,
} from '../operations/tokens.js';
import { renderTable } from '../table.js';

interface JsonOptions extends DbOptions {
  json?: boolean;
}

interface CreateOptions extends JsonOptions {
  scope: TokenScope;
  org?: string;
  name?: string;
  ttl?: string;
}

interface ListOptions extends JsonOptions {
  org?: string;
}

/** --ttl's seconds: a whole number above 0, or the command ends naming the flag. */
export function ttlSeconds(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[1-9][0-9]{0,9}$/.test(text)) {
    throw new CliExit(
      1,
      `--ttl must be a whole number of seconds above 0, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

const iso = (date: Date | null): string | null => (date === null ? null : date.toISOString());

export function register(program: Command, io: CliIo): void {
  const token = program
    .command('token')
    .summary('manage the API tokens of the HTTP control plane')
    .description(
      "manage the API tokens of the HTTP control plane (admin_port): scope operator (every route), org (one org's routes) or metrics (GET /metrics). A token is shown once, when created; the catalog keeps only its SHA-256 hash",
    );

  token
    .command('create')
    .summary('create a token and print it, once')
    .description(
      'create an API token and print it on stdout, alone on its line; it cannot be shown again. Clients send it as Authorization: Bearer <token>',
    )
    .addOption(
      new Option('--scope <scope>', 'what the token may do')
        .choices([...tokenScopes])
        .makeOptionMandatory(),
    )
    .option('--org <org>', 'scope org: the org, its id or its database name')
    .option('--name <name>', 'what the token is for, shown in token list')
    .option('--ttl <seconds>', 'seconds until it expires (default: never)')
    .option(
      '--json',
      'print a JSON object: id, token, scope, org_id, database_name, name, expires_at',
    )
    .addOption(dbOption())
    .action(
      operationAction(io, async (options: CreateOptions) => {
        const url = connectionString(options);
        if (options.scope === 'org' && options.org === undefined) {
          throw new CliExit(1, 'an org token needs --org <org>');
        }
        if (options.scope !== 'org' && options.org !== undefined) {
          throw new CliExit(
            1,
            `${options.scope === 'operator' ? 'an' : 'a'} ${options.scope} token is bound to no org: leave out --org`,
          );
        }
        const ttl = ttlSeconds(options.ttl);
        const created = await withClient(url, (client) =>
          createToken(client, {
            scope: options.scope,
            org: options.org,
            name: options.name,
            ttlSeconds: ttl,
          }),
        );
        if (options.json === true) {
          io.out(
            `${JSON.stringify(
              {
                id: created.id,
                token: created.token,
                scope: created.scope,
                org_id: created.org?.id ?? null,
                database_name: created.org?.database_name ?? null,
                name: created.name,
                expires_at: iso(created.expires_at),
              },
              null,
              2,
            )}\n`,
          );
          return;
        }
        const forOrg = created.org === null ? '' : ` for org ${created.org.database_name}`;
        const expires =
          created.expires_at === null
            ? 'never expires'
            : `expires ${iso(created.expires_at) ?? ''}`;
        io.err(
          `created ${created.scope} token ${created.id}${forOrg} (${expires}); it is shown only this once:\n`,
        );
        io.out(`${created.token}\n`);
      }),
    );

  token
    .command('list')
    .summary('list the tokens (never the tokens themselves)')
    .description(
      'list the API tokens: id, scope, org, name, state (active, expired, revoked) and when each was created, expires and was last used. The tokens themselves cannot be shown',
    )
    .option('--org <org>', "only this org's tokens: its id or its database name")
    .option('--json', 'print a JSON array instead of a table')
    .addOption(dbOption())
    .action(
      operationAction(io, async (options: ListOptions) => {
        const url = connectionString(options);
        const rows = await withClient(url, (client) => listTokens(client, { org: options.org }));
        if (options.json === true) {
          io.out(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        if (rows.length === 0) {
          io.out(options.org === undefined ? 'no tokens\n' : `no tokens for org ${options.org}\n`);
          return;
        }
        io.out(
          renderTable(
            rows.map((row) => ({
              ...row,
              org: row.database_name,
              created_at: iso(row.created_at),
              expires_at: iso(row.expires_at),
              last_used_at: iso(row.last_used_at),
            })),
            ['id', 'scope', 'org', 'name', 'state', 'created_at', 'expires_at', 'last_used_at'],
          ),
        );
      }),
    );

  token
    .command('revoke')
    .summary('revoke a token')
    .description('revoke an API token: the very next request that presents it is refused (401)')
    .argument('<id>', 'the token id (pgvpd token list)')
    .addOption(dbOption())
    .action(
      operationAction(io, async (id: string, options: DbOptions) => {
        const url = connectionString(options);
        const result = await withClient(url, (client) => revokeToken(client, id));
        io.out(
          result.revoked
            ? `revoked token ${result.id}\n`
            : `token ${result.id} was revoked already\n`,
        );
      }),
    );
}
