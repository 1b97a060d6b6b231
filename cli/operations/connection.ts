// Short-lived connections for the operations (and the commands): a pg.Client for a connection
// string, optionally on another database of the same server with the same credentials, and the
// single-row query the catalog functions call for.
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';

/** A hung connect should end an operation with an error, not leave its caller waiting. */
const connectTimeoutMs = 10_000;

/** A connected client for `url`, or for `database` on the server url leads to; the caller ends it. */
export async function openClient(url: string, database?: string): Promise<pg.Client> {
  const target =
    database === undefined
      ? { connectionString: url }
      : { ...parseIntoClientConfig(url), database };
  const client = new pg.Client({
    ...target,
    connectionTimeoutMillis: connectTimeoutMs,
    application_name: 'pgvpd-cli',
  });
  // A connection lost between queries is reported by the next query; the event alone must not
  // crash the process.
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

/** fn with a client for url (or for `database` on its server), ended afterwards. */
export async function withClient<T>(
  url: string,
  fn: (client: pg.Client) => Promise<T>,
  database?: string,
): Promise<T> {
  const client = await openClient(url, database);
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The single row a query returns by construction (a function call, an aggregate). */
export async function queryOne<R extends pg.QueryResultRow>(
  client: pg.ClientBase,
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
