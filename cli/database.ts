// The database a command works on: --db, or DATABASE_URL as its fallback (commander reads the
// environment, so --help shows it), and a short-lived pg.Client to run a command's queries (the
// helpers of operations/connection.ts, which the operations use too).
import { Option } from 'commander';
import { CliExit } from './cli-exit.js';

export { endpointOf, openClient, queryOne, withClient } from './operations/connection.js';

export interface DbOptions {
  db?: string;
}

export function dbOption(): Option {
  return new Option('--db <url>', 'connection string of the database').env('DATABASE_URL');
}

export function connectionString(options: DbOptions): string {
  if (options.db === undefined || options.db === '') {
    throw new CliExit(1, 'no database: pass --db <url> or set DATABASE_URL');
  }
  return options.db;
}
