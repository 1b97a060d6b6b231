// pgvpd setup: installs or upgrades pgvpd's SQL by applying the committed migrations with
// graphile-migrate, which records what it applied in schema graphile_migrate. Migration 000001 is
// idempotent, so this also works on a database that got the SQL from `psql -f sql/setup.sql`.
// Then it chooses the context path (pgvpd.choose_context_path(): guard when the server has loaded
// the pgvpd_guard module, SQL otherwise).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { Logger, migrate } from 'graphile-migrate';
import { clearAllPools } from 'graphile-migrate/dist/pgReal.js';
import { CliExit } from '../cli-exit.js';
import { connectionString, dbOption, queryOne, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { migrationsFolder } from '../../proxy/package-root.js';

/** graphile-migrate's progress lines ("Running migration …") are what happened; debug is noise. */
function migrateLogger(io: CliIo): Logger {
  return new Logger(() => (level, message) => {
    const name: string = level;
    if (name === 'debug') return;
    if (name === 'info') io.out(`${message}\n`);
    else io.err(`${message}\n`);
  });
}

export function register(program: Command, io: CliIo): void {
  program
    .command('setup')
    .summary("install or upgrade pgvpd's SQL; safe to repeat")
    .description(
      "install or upgrade pgvpd's SQL in the database (graphile-migrate migrations, as a superuser); safe to run again",
    )
    .addOption(dbOption())
    .action(async (options: DbOptions) => {
      const url = connectionString(options);
      const committed = join(migrationsFolder, 'committed');
      // graphile-migrate would create a missing folder and report "up to date" with nothing done.
      if (!existsSync(committed)) {
        throw new CliExit(1, `pgvpd's migrations are missing: ${committed}`);
      }
      try {
        await migrate({ connectionString: url, migrationsFolder, logger: migrateLogger(io) });
      } finally {
        // graphile-migrate keeps its pool open for a while after use; closing it now lets the
        // process exit at once, and a database dropped right after cannot reach that pool's
        // error handler, which exits the process.
        clearAllPools();
      }
      // Every time, not only when a migration ran: the server may have loaded (or dropped) the
      // guard module since the last setup.
      const { version, database, path } = await withClient(url, (client) =>
        queryOne<{ version: string; database: string; path: string }>(
          client,
          'select pgvpd.version() as version, current_database() as database, pgvpd.choose_context_path() as path',
        ),
      );
      io.out(`pgvpd ${version} is installed in database ${database}\n`);
      io.out(
        path === 'guard'
          ? 'context path: guard (the pgvpd_guard module is loaded: verified once per session, read as settings no client can set)\n'
          : 'context path: sql (the pgvpd_guard module is not loaded: every statement verifies the context)\n',
      );
    });
}
