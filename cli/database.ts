// The database a command works on: --db, or DATABASE_URL as its fallback (commander reads the
// environment, so --help shows it), and a short-lived pg.Client to run a command's queries.
import { Option } from 'commander';
import pg from 'pg';
import { CliExit } from './cli-exit.js';

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

/** A hung connect should end a command with an error, not leave an operator waiting. */
const connectTimeoutMs = 10_000;

/** A connected client; the caller ends it. */
export async function openClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: connectTimeoutMs,
    application_name: 'pgvpd-cli',
  });
  // A connection lost between queries is reported by the next query; the event alone must not
  // crash the process.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export async function withClient<T>(
  url: string,
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = await openClient(url);
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The single row a query returns by construction (a function call, an aggregate). */
export async function queryOne<R extends pg.QueryResultRow>(
  client: pg.Client,
  sql: string,
  params: unknown[] = [],
): Promise<R> {
  const { rows } = await client.query<R>(sql, params);
  const [row] = rows;
  if (row === undefined) throw new Error(`expected one row from: ${sql}`);
  return row;
}

/** Host and port a connection string leads to, with libpq's defaults and PG* variables applied. */
export function endpointOf(url: string): { host: string; port: number } {
  const client = new pg.Client({ connectionString: url });
  return { host: client.host, port: client.port };
}
