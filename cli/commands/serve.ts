// pgvpd serve: the proxy. Settings come from defaults, then --config, then PGVPD_* environment,
// then these flags. SIGTERM or SIGINT drains (stop accepting, let sessions finish for
// shutdown_timeout, then end them with 57P01); a second signal exits at once.
import { Command, Option } from 'commander';
import {
  ConfigError,
  configKeys,
  defaults,
  descriptions,
  envName,
  envOnlyKeys,
  flagName,
  loadConfig,
  type ConfigKey,
} from '../../proxy/config.js';
import { StartupError } from '../../proxy/errors.js';
import { startProxy } from '../../proxy/index.js';
import { CliExit } from '../cli-exit.js';
import type { CliIo } from '../io.js';

/** commander's attribute name for a flag: --listen-host → listenHost. */
function attributeOf(key: ConfigKey): string {
  return key.replace(/_([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

export function configOptions(command: Command): Command {
  command.option('-c, --config <file>', 'pgvpd.conf file ("key = value" lines)');
  for (const key of configKeys) {
    if (envOnlyKeys.has(key)) continue;
    const shown = defaults[key];
    const value = typeof shown === 'boolean' ? '[bool]' : '<value>';
    const option = new Option(
      `${flagName(key)} ${value}`,
      `${descriptions[key]} (${envName(key)})`,
    );
    if (shown !== undefined)
      option.default(undefined, Array.isArray(shown) ? shown.join(',') : String(shown));
    command.addOption(option);
  }
  return command;
}

/** The flags given on the command line, by config key. */
export function flagsOf(options: Record<string, unknown>): Partial<Record<ConfigKey, unknown>> {
  const flags: Partial<Record<ConfigKey, unknown>> = {};
  for (const key of configKeys) {
    if (envOnlyKeys.has(key)) continue;
    const value = options[attributeOf(key)];
    if (value !== undefined) flags[key] = value;
  }
  return flags;
}

export function register(program: Command, io: CliIo): void {
  configOptions(
    program
      .command('serve')
      .summary('run the proxy')
      .description(
        'run the pgvpd proxy: clients connect as <role>.<tenant>, the proxy relays authentication to PostgreSQL and sets a signed tenant context on the session before the first query',
      ),
  ).action(async (options: Record<string, unknown> & { config?: string }) => {
    let config;
    try {
      config = loadConfig({ file: options.config, env: process.env, flags: flagsOf(options) });
    } catch (error) {
      if (error instanceof ConfigError) throw new CliExit(1, error.message);
      throw error;
    }
    // Each cause of a failed start has its own message (StartupError, errors.ts).
    const proxy = await startProxy(config).catch((error: unknown) => {
      if (error instanceof ConfigError || error instanceof StartupError)
        throw new CliExit(1, error.message);
      throw error;
    });
    io.err(`pgvpd proxy listening on ${proxy.host}:${String(proxy.port)}\n`);
    if (proxy.adminUrl !== undefined) {
      io.err(`pgvpd control plane on ${proxy.adminUrl}\n`);
      if (proxy.publicPort !== undefined) {
        io.err(`pgvpd public routes on ${config.public_host}:${String(proxy.publicPort)}\n`);
      }
    }
    await new Promise<void>((resolve) => {
      let signalled = false;
      const stop = (signal: NodeJS.Signals): void => {
        if (signalled) {
          io.err(`${signal} again: exiting now\n`);
          process.exit(1);
        }
        signalled = true;
        io.err(`${signal}: draining (up to ${String(config.shutdown_timeout)} s)\n`);
        void proxy.close().then(resolve);
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
  });
}
