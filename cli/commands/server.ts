// pgvpd server: the PostgreSQL servers orgs are placed on. The work is done by
// cli/operations/servers.ts (pgvpd.server_* functions). The built-in server `default` is the
// proxy's own upstream; others are named once here, with their address and TLS mode, and orgs
// refer to them by name.
import { InvalidArgumentError, Option, type Command } from 'commander';
import { operationAction } from '../cli-exit.js';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { addServer, listServers, removeServer, type TlsMode } from '../operations/servers.js';
import { renderTable } from '../table.js';

interface AddOptions extends DbOptions {
  host: string;
  port: number;
  tls: TlsMode;
}

interface ListOptions extends DbOptions {
  json?: boolean;
}

function parsePort(value: string): number {
  if (!/^[0-9]{1,5}$/.test(value)) throw new InvalidArgumentError('a port is a number, 1 to 65535');
  return Number(value);
}

export function register(program: Command, io: CliIo): void {
  const server = program
    .command('server')
    .summary('manage the servers orgs are placed on')
    .description(
      "manage the PostgreSQL servers orgs are placed on. The built-in server default is the proxy's own upstream; add others by name, address and TLS mode",
    );

  server
    .command('add')
    .summary('name a PostgreSQL server')
    .description('name a PostgreSQL server, so that orgs can be placed on it (org create --server)')
    .argument('<name>', 'its name, ^[a-z0-9][a-z0-9_-]{0,62}$')
    .requiredOption('--host <host>', 'its host name or address, as the proxy reaches it')
    .addOption(new Option('--port <port>', 'its port').argParser(parsePort).default(5432))
    .addOption(
      new Option('--tls <mode>', 'how the proxy connects to it')
        .choices(['disable', 'require', 'verify-full'])
        .default('disable'),
    )
    .addOption(dbOption())
    .action(
      operationAction(io, async (name: string, options: AddOptions) => {
        const url = connectionString(options);
        await withClient(url, (client) =>
          addServer(client, { name, host: options.host, port: options.port, tls: options.tls }),
        );
        io.out(
          `added server ${name} (${options.host}:${String(options.port)}, tls ${options.tls})\n`,
        );
      }),
    );

  server
    .command('list')
    .summary('list the servers')
    .description('list the servers, with the number of orgs each holds')
    .option('--json', 'print a JSON array of pgvpd.servers() rows instead of a table')
    .addOption(dbOption())
    .action(
      operationAction(io, async (options: ListOptions) => {
        const url = connectionString(options);
        const rows = await withClient(url, listServers);
        if (options.json === true) {
          io.out(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        // default is the proxy's upstream: its address and TLS mode are the proxy's settings.
        const display = rows.map((row) => ({
          ...row,
          host: row.host ?? "(the proxy's upstream)",
          tls: row.host === null ? null : row.tls,
          orgs: row.org_count,
        }));
        io.out(renderTable(display, ['name', 'host', 'port', 'tls', 'orgs']));
      }),
    );

  server
    .command('remove')
    .summary('remove a server that holds no org')
    .description('remove a server; refused while an org is placed on it, and for default')
    .argument('<name>', 'the server')
    .addOption(dbOption())
    .action(
      operationAction(io, async (name: string, options: DbOptions) => {
        const url = connectionString(options);
        await withClient(url, (client) => removeServer(client, name));
        io.out(`removed server ${name}\n`);
      }),
    );
}
