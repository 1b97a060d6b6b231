// The databases of dedicated orgs, which the catalog can only record: CREATE DATABASE cannot run
// inside a transaction block (so not inside a SQL function), and neither can DROP DATABASE. These
// run on a superuser connection to the org's server: the given serverDb, or for the built-in
// server `default` (the proxy's upstream, taken to be the server the catalog lives on) the
// catalog's own connection string.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { packageRoot } from '../../proxy/package-root.js';
import { endpointOf, queryOne, withClient } from './connection.js';
import { OperationError } from './errors.js';
import { getServer } from './servers.js';

/** Where to reach an org's server as a superuser. */
export interface ServerAccess {
  /** Superuser connection string on the org's server (the CLI's --server-db). */
  serverDb?: string | undefined;
  /**
   * The catalog's connection string (the CLI's --db): used for the server `default` when
   * serverDb is not given.
   */
  catalogUrl?: string | undefined;
}

export interface AdminUrl {
  url: string;
  /** E.g. serverDb leads to another address than the catalog records for the server. */
  warnings: string[];
}

/**
 * The connection string on which to create or drop a database of server `serverName`: serverDb
 * when given, else catalogUrl for `default`. A server with its own host and port needs serverDb
 * (server_db_required).
 */
export async function adminUrlFor(
  catalog: pg.ClientBase,
  serverName: string,
  access: ServerAccess,
): Promise<AdminUrl> {
  const server = await getServer(catalog, serverName);
  const at = server.host === null ? undefined : `${server.host}:${String(server.port ?? '')}`;
  if (access.serverDb !== undefined && access.serverDb !== '') {
    const warnings: string[] = [];
    if (at !== undefined) {
      const { host, port } = endpointOf(access.serverDb);
      if (host.toLowerCase() !== server.host?.toLowerCase() || port !== server.port) {
        warnings.push(
          `--server-db leads to ${host}:${String(port)}, the catalog has server ${server.name} at ${at}`,
        );
      }
    }
    return { url: access.serverDb, warnings };
  }
  if (at === undefined) {
    if (access.catalogUrl !== undefined && access.catalogUrl !== '') {
      return { url: access.catalogUrl, warnings: [] };
    }
    throw new OperationError(
      'server_db_required',
      `the org's database is on server ${server.name}: give serverDb or catalogUrl, a superuser connection string for that server`,
    );
  }
  throw new OperationError(
    'server_db_required',
    `the org's database is on server ${server.name} (${at}): pass --server-db <url>, a superuser connection string for that server`,
  );
}

/** pgvpd's SQL (sql/setup.sql of this package). */
export function setupSql(): string {
  const path = join(packageRoot, 'sql', 'setup.sql');
  if (!existsSync(path)) throw new OperationError('internal', `pgvpd's SQL is missing: ${path}`);
  return readFileSync(path, 'utf8');
}

/** CREATE DATABASE name TEMPLATE template on the server adminUrl leads to. */
export async function createDatabase(
  adminUrl: string,
  name: string,
  template = 'template0',
): Promise<void> {
  await withClient(adminUrl, async (client) => {
    await client.query(
      `create database ${client.escapeIdentifier(name)} template ${client.escapeIdentifier(template)}`,
    );
  });
}

/** Runs pgvpd's SQL in database `name` on the server adminUrl leads to. */
export async function installPgvpd(
  adminUrl: string,
  name: string,
  sql = setupSql(),
): Promise<void> {
  await withClient(
    adminUrl,
    async (client) => {
      await client.query(sql);
    },
    name,
  );
}

/**
 * DROP DATABASE, ending the sessions still on it (WITH (FORCE), PostgreSQL 13 and later). False
 * when there was no such database.
 */
export async function dropDatabase(adminUrl: string, name: string): Promise<boolean> {
  return withClient(adminUrl, async (client) => {
    const { rowCount } = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (rowCount === 0) return false;
    const { num } = await queryOne<{ num: number }>(
      client,
      "select current_setting('server_version_num')::int as num",
    );
    const force = num >= 130000 ? ' with (force)' : '';
    await client.query(`drop database ${client.escapeIdentifier(name)}${force}`);
    return true;
  });
}
