// The HTTP server's database: a small pg Pool on admin_control_url (default control_url), whose
// login is a member of pgvpd_api. Every value, the token included, travels as a bind parameter;
// no SQL text is ever built from a request. A serialization failure is retried once
// (sql-errors.ts). An idle connection that breaks is dropped by the pool, never thrown.
import pg from 'pg';
import type { Logger } from '../logger.js';
import { retryOnce } from './sql-errors.js';

export class AdminDatabase {
  private readonly pool: pg.Pool;

  constructor(url: string, log: Logger) {
    this.pool = new pg.Pool({
      connectionString: url,
      application_name: 'pgvpd-admin',
      max: 8,
      // Also the longest a request waits for a free connection of the pool.
      connectionTimeoutMillis: 5000,
      idleTimeoutMillis: 30_000,
      // A request waits at most this long for the database; its socket has 10 s in all.
      query_timeout: 8000,
    });
    this.pool.on('error', (error) => {
      log.warn({ event: 'admin_database', err: error.message }, 'admin database connection lost');
    });
  }

  /** The rows of one statement; `params` are bind parameters ($1, $2…). */
  async rows<R extends pg.QueryResultRow>(text: string, params: unknown[]): Promise<R[]> {
    return retryOnce(async () => (await this.pool.query<R>(text, params)).rows);
  }

  /** Resolves when `select 1` answers within `timeoutMs`; rejects otherwise. */
  async ping(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.pool.query('select 1'),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            reject(new Error(`no answer within ${String(timeoutMs)} ms`));
          }, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
