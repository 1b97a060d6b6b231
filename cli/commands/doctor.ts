// pgvpd doctor: the preflight before `pgvpd serve`. Each check prints one line (ok / FAIL with the
// fix / skip with why); the exit code is 1 when any check fails, so a deploy script can stop there.
// The upstream, the control connection and the HTTP control plane's login (admin_port,
// admin_control_url) come from the proxy's own configuration (file, PGVPD_* environment, flags),
// so that doctor checks what serve would use.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type pg from 'pg';
import {
  ConfigError,
  envName,
  loadConfig,
  parseConfigFile,
  type ConfigKey,
  type ProxyConfig,
} from '../../proxy/config.js';
import { CliExit } from '../cli-exit.js';
import {
  checkApiLogin,
  checkAppRoles,
  checkConfinement,
  checkContextPath,
  checkControl,
  checkInstalled,
  checkTables,
  checkUpstream,
  formatLine,
  type CheckLine,
} from '../doctor-checks.js';
import { connectionString, dbOption, endpointOf, openClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { packageVersion } from '../../proxy/package-root.js';

interface DoctorOptions extends DbOptions {
  config?: string;
  upstreamHost?: string;
  upstreamPort?: string;
  controlUrl?: string;
  adminPort?: string;
}

function configFrom(options: DoctorOptions): { config: ProxyConfig; explicit: Set<ConfigKey> } {
  const flags = {
    upstream_host: options.upstreamHost,
    upstream_port: options.upstreamPort,
    control_url: options.controlUrl,
    admin_port: options.adminPort,
  };
  let config: ProxyConfig;
  try {
    config = loadConfig({ file: options.config, env: process.env, flags });
  } catch (error) {
    if (error instanceof ConfigError) throw new CliExit(1, error.message);
    throw error;
  }
  // Which settings someone actually gave: an upstream nobody configured is the --db server, not
  // the proxy's built-in default of 127.0.0.1:5432.
  const fileKeys =
    options.config === undefined
      ? []
      : Object.keys(parseConfigFile(readFileSync(options.config, 'utf8'), options.config));
  const explicit = new Set<ConfigKey>();
  for (const key of ['upstream_host', 'upstream_port'] as const) {
    if (
      flags[key] !== undefined ||
      process.env[envName(key)] !== undefined ||
      fileKeys.includes(key)
    ) {
      explicit.add(key);
    }
  }
  return { config, explicit };
}

interface DatabaseLines {
  installed: CheckLine;
  roles: CheckLine[];
  tables: CheckLine[];
  path: CheckLine;
  confinement: CheckLine;
}

/** The checks that read the --db database; each is skipped when it cannot be asked. */
async function databaseChecks(url: string): Promise<DatabaseLines> {
  const skipped = (why: string): Omit<DatabaseLines, 'installed'> => ({
    roles: [{ outcome: 'skip', text: `application roles safe: ${why}` }],
    tables: [{ outcome: 'skip', text: `tables protected: ${why}` }],
    path: { outcome: 'skip', text: `context path: ${why}` },
    confinement: { outcome: 'skip', text: `tenant confinement: ${why}` },
  });
  let client: pg.Client;
  try {
    client = await openClient(url);
  } catch (error) {
    const installed: CheckLine = {
      outcome: 'FAIL',
      text: `database unreachable: ${(error as Error).message}`,
      fix: 'check --db or DATABASE_URL',
    };
    return { installed, ...skipped('no database connection') };
  }
  try {
    const { line, installed } = await checkInstalled(client, packageVersion);
    if (!installed) return { installed: line, ...skipped('pgvpd SQL not installed') };
    return {
      installed: line,
      roles: await checkAppRoles(client),
      tables: await checkTables(client),
      path: await checkContextPath(client),
      confinement: await checkConfinement(client),
    };
  } finally {
    await client.end();
  }
}

export function register(program: Command, io: CliIo): void {
  program
    .command('doctor')
    .summary('preflight checks before serving')
    .description(
      "check that pgvpd can run safely: upstream reachable, SQL installed, application roles unable to bypass RLS, the control role able to issue context, the HTTP control plane's login a member of pgvpd_api (with admin_port), every tenant table protected, the context path matching what the server loaded, tenant confinement in place; exits 1 when a check fails",
    )
    .addOption(dbOption())
    .option(
      '--config <file>',
      'the proxy configuration file (pgvpd.conf) whose upstream and control_url to check',
    )
    .option('--upstream-host <host>', 'upstream PostgreSQL host (default: the host of --db)')
    .option('--upstream-port <port>', 'upstream PostgreSQL port (default: the port of --db)')
    .option('--control-url <url>', 'connection string of the control connection (role pgvpd_proxy)')
    .option(
      '--admin-port <port>',
      'the HTTP control plane is on: check its login (admin_control_url, else control_url)',
    )

    .action(async (options: DoctorOptions) => {
      const url = connectionString(options);
      const { config, explicit } = configFrom(options);
      const db = endpointOf(url);
      const host = explicit.has('upstream_host') ? config.upstream_host : db.host;
      const port = explicit.has('upstream_port') ? config.upstream_port : db.port;

      const lines: CheckLine[] = [];
      const report = (...more: CheckLine[]): void => {
        for (const line of more) io.out(`${formatLine(line)}\n`);
        lines.push(...more);
      };
      report(await checkUpstream(host, port));
      const database = await databaseChecks(url);
      report(database.installed, ...database.roles);
      report(await checkControl(config.control_url));
      report(await checkApiLogin(config.admin_port, config.admin_control_url, config.control_url));
      report(...database.tables, database.path, database.confinement);

      const failed = lines.filter((line) => line.outcome === 'FAIL').length;
      if (failed > 0) {
        io.out(`${failed} ${failed === 1 ? 'check' : 'checks'} failed\n`);
        throw new CliExit(1);
      }
    });
}
