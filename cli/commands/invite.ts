// pgvpd invite: invites to become a user of an org. The work is done by
// cli/operations/invites.ts (pgvpd.invite_* functions); this command parses options and prints.
// `invite create` prints the setup link, <public URL>/setup#invite=<invite>, on stdout: the one
// time the invite can be read (the catalog keeps only its hash). The public URL is --public-url,
// else PGVPD_PUBLIC_URL, else the proxy's own settings as `pgvpd serve` reads them (--config, the
// PGVPD_* environment): public_url, else http://<admin_host>:<admin_port>. With none of these the
// command refuses before creating anything: a link to nowhere helps nobody.
import { Option, type Command } from 'commander';
import { ConfigError, loadConfig } from '../../proxy/config.js';
import { CliExit, operationAction } from '../cli-exit.js';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { createInvite, listInvites, revokeInvite, setupUrl } from '../operations/invites.js';
import { renderTable } from '../table.js';
import { ttlSeconds } from './token.js';

interface CreateOptions extends DbOptions {
  connectAs: string;
  ttl?: string;
  publicUrl?: string;
  config?: string;
  json?: boolean;
}

interface ListOptions extends DbOptions {
  json?: boolean;
}

/** An http(s) URL without query or fragment, or the command ends naming where it came from. */
function checkedUrl(text: string, where: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CliExit(
      1,
      `${where} must be an http:// or https:// URL, got ${JSON.stringify(text)}`,
    );
  }
  if (
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.search !== '' ||
    url.hash !== ''
  ) {
    throw new CliExit(
      1,
      `${where} must be an http:// or https:// URL without ? or #, got ${JSON.stringify(text)}`,
    );
  }
  return text.replace(/\/+$/, '');
}

/** The origin of setup links, as the module comment says; never a guess. */
export function publicUrlFor(options: { publicUrl?: string; config?: string }): string {
  if (options.publicUrl !== undefined) return checkedUrl(options.publicUrl, '--public-url');
  let config;
  try {
    config = loadConfig({ file: options.config, env: process.env });
  } catch (error) {
    if (error instanceof ConfigError) throw new CliExit(1, error.message);
    throw error;
  }
  if (config.public_url !== undefined) return checkedUrl(config.public_url, 'public_url');
  if (config.admin_port !== undefined) {
    const host = config.admin_host.includes(':') ? `[${config.admin_host}]` : config.admin_host;
    return `http://${host}:${String(config.admin_port)}`;
  }
  throw new CliExit(
    1,
    'no public URL for the setup link: pass --public-url <url> or set PGVPD_PUBLIC_URL (or public_url or admin_port in --config): nothing was created',
  );
}

const iso = (date: Date): string => date.toISOString();

export function register(program: Command, io: CliIo): void {
  const invite = program
    .command('invite')
    .summary("invite people to become an org's users")
    .description(
      'invite a person to become a user of an org: they open the setup link, choose a password on the /setup page (their browser sends only its SCRAM verifier), and are added as the user. An invite is shown once; it lives 24 hours unless --ttl says otherwise (at most 7 days); a new invite for the same username revokes the open one',
    );

  invite
    .command('create')
    .summary('create an invite and print its setup link, once')
    .description(
      'create an invite and print its setup link on stdout, <public URL>/setup#invite=<invite>; it cannot be shown again. The public URL: --public-url, else PGVPD_PUBLIC_URL, else public_url or http://<admin_host>:<admin_port> from the proxy settings (--config, PGVPD_*)',
    )
    .argument('<org>', 'the org: its id or its database name')
    .argument('<username>', 'the username the invited person gets')
    .requiredOption('--connect-as <role>', 'the role the proxy logs in as upstream for this user')
    .option(
      '--ttl <seconds>',
      'seconds until it expires, at most 604800 (default: 86400, 24 hours)',
    )
    .addOption(
      new Option('--public-url <url>', 'origin of the setup link, e.g. https://db.example.com').env(
        'PGVPD_PUBLIC_URL',
      ),
    )
    .option('--config <file>', 'the proxy configuration file to read public_url / admin_port from')
    .option(
      '--json',
      'print a JSON object: id, invite, setup_url, org_id, database_name, username, connect_as, expires_at',
    )
    .addOption(dbOption())
    .action(
      operationAction(io, async (org: string, username: string, options: CreateOptions) => {
        const url = connectionString(options);
        const ttl = ttlSeconds(options.ttl);
        const origin = publicUrlFor(options);
        const created = await withClient(url, (client) =>
          createInvite(client, { org, username, connectAs: options.connectAs, ttlSeconds: ttl }),
        );
        const link = setupUrl(origin, created.invite);
        if (options.json === true) {
          io.out(
            `${JSON.stringify(
              {
                id: created.id,
                invite: created.invite,
                setup_url: link,
                org_id: created.org.id,
                database_name: created.org.database_name,
                username: created.username,
                connect_as: created.connect_as,
                expires_at: iso(created.expires_at),
              },
              null,
              2,
            )}\n`,
          );
          return;
        }
        io.err(
          `invite ${created.id} for ${username} in org ${created.org.database_name}, connecting as ${created.connect_as}, open until ${iso(created.expires_at)}; the link is shown only this once:\n`,
        );
        io.out(`${link}\n`);
      }),
    );

  invite
    .command('list')
    .summary("list an org's invites (never the invites themselves)")
    .description(
      "list an org's invites: id, username, connect_as, state (open, consumed, expired, revoked), created and expiry times",
    )
    .argument('<org>', 'the org: its id or its database name')
    .option('--json', 'print a JSON array of pgvpd.invites() rows instead of a table')
    .addOption(dbOption())
    .action(
      operationAction(io, async (org: string, options: ListOptions) => {
        const url = connectionString(options);
        const listed = await withClient(url, (client) => listInvites(client, org));
        if (options.json === true) {
          io.out(`${JSON.stringify(listed.invites, null, 2)}\n`);
          return;
        }
        if (listed.invites.length === 0) {
          io.out(`no invites in org ${listed.org.database_name}\n`);
          return;
        }
        io.out(
          renderTable(
            listed.invites.map((row) => ({
              ...row,
              created_at: iso(row.created_at),
              expires_at: iso(row.expires_at),
            })),
            ['id', 'username', 'connect_as', 'state', 'created_at', 'expires_at'],
          ),
        );
      }),
    );

  invite
    .command('revoke')
    .summary('revoke an invite')
    .description('revoke an open invite of an org: its setup link stops working')
    .argument('<org>', 'the org: its id or its database name')
    .argument('<id>', 'the invite id (pgvpd invite list <org>)')
    .addOption(dbOption())
    .action(
      operationAction(io, async (org: string, id: string, options: DbOptions) => {
        const url = connectionString(options);
        const result = await withClient(url, (client) => revokeInvite(client, { org, id }));
        const name = result.org.database_name;
        io.out(
          result.revoked
            ? `revoked invite ${result.id} of org ${name}\n`
            : `invite ${result.id} of org ${name} was consumed or revoked already\n`,
        );
      }),
    );
}
