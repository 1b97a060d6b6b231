// The PostgreSQL servers orgs are placed on (pgvpd.server_* functions in the catalog). The
// built-in server `default` is the proxy's own upstream: its host, port and tls are null here.
import type pg from 'pg';
import { OperationError, operation } from './errors.js';

/** A row of pgvpd.servers(). */
export interface ServerRow {
  name: string;
  host: string | null;
  port: number | null;
  tls: string | null;
  org_count: number;
  created_at: Date;
}

export type TlsMode = 'disable' | 'require' | 'verify-full';

export interface AddServerInput {
  /** ^[a-z0-9][a-z0-9_-]{0,62}$ */
  name: string;
  /** Host name or address, as the proxy reaches it. */
  host: string;
  /** Default 5432. */
  port?: number;
  /** Default disable. */
  tls?: TlsMode;
}

/** Every server, default first, then by name. */
export async function listServers(catalog: pg.ClientBase): Promise<ServerRow[]> {
  return operation(async () => {
    const { rows } = await catalog.query<ServerRow>('select * from pgvpd.servers()');
    return rows;
  });
}

/** One server by name; not_found (no SQLSTATE) when there is none. */
export async function getServer(catalog: pg.ClientBase, name: string): Promise<ServerRow> {
  return operation(async () => {
    const { rows } = await catalog.query<ServerRow>(
      'select * from pgvpd.servers() s where s.name = $1',
      [name],
    );
    const [server] = rows;
    if (server === undefined) {
      throw new OperationError('not_found', `no server ${JSON.stringify(name)}`);
    }
    return server;
  });
}

/** Names a server (pgvpd.server_add) and returns its row. */
export async function addServer(catalog: pg.ClientBase, input: AddServerInput): Promise<ServerRow> {
  return operation(async () => {
    await catalog.query('select pgvpd.server_add($1, $2, $3, $4)', [
      input.name,
      input.host,
      input.port ?? 5432,
      input.tls ?? 'disable',
    ]);
    return getServer(catalog, input.name);
  });
}

/** Removes a server that holds no org (pgvpd.server_remove; default cannot be removed). */
export async function removeServer(
  catalog: pg.ClientBase,
  name: string,
): Promise<{ name: string }> {
  return operation(async () => {
    await catalog.query('select pgvpd.server_remove($1)', [name]);
    return { name };
  });
}
