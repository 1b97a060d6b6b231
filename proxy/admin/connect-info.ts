// What a redeemed invite's user is told for connecting: host, port, database, user and sslmode,
// the psql line and the URI (no password in either). The psql line quotes the conninfo for a
// POSIX shell (single quotes), so a name holding `"`, `$(…)`, `$x` or `'` runs nothing when the
// line is pasted. Host, port and sslmode come from settings (connect_host, connect_port,
// connect_sslmode; defaults: the proxy's listen_host and port, verify-full when the proxy has
// tls_cert, else prefer), never from a request's Host header.
import type { ProxyConfig } from '../config.js';

/**
 * The link an invited person opens: `<publicUrl>/setup#invite=<invite>`. publicUrl is an origin
 * (a trailing slash is dropped); the invite goes in the fragment, never in a path or query.
 * The HTTP API and the CLI both print it.
 */
export function setupUrl(publicUrl: string, invite: string): string {
  return `${publicUrl.replace(/\/+$/, '')}/setup#invite=${invite}`;
}

export interface ConnectTarget {
  host: string;
  port: number;
  sslmode: string;
}

export interface Connection extends ConnectTarget {
  database: string;
  user: string;
}

export interface ConnectInfo {
  connection: Connection;
  psql: string;
  uri: string;
}

/** The settings' target; `proxyPort` is the port the proxy actually listens on. */
export function connectTarget(config: ProxyConfig, proxyPort: number): ConnectTarget {
  return {
    host: config.connect_host ?? config.listen_host,
    port: config.connect_port ?? proxyPort,
    sslmode: config.connect_sslmode ?? (config.tls_cert === undefined ? 'prefer' : 'verify-full'),
  };
}

/** A libpq keyword value, quoted when it holds anything but plain characters. */
function keywordValue(value: string): string {
  return /^[A-Za-z0-9_.:-]+$/.test(value)
    ? value
    : `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

/**
 * One word for a POSIX shell: single quotes, each `'` inside as `'\''`. Nothing inside single
 * quotes is special to the shell (no `$`, backquote, `\` or `"`), so a pasted line runs psql with
 * exactly this argument and nothing else, whatever the username or database name holds.
 */
function shellQuoted(value: string): string {
  return `'${value.replaceAll("'", "'\\''")}'`;
}

export function connectInfo(target: ConnectTarget, database: string, user: string): ConnectInfo {
  const { host, port, sslmode } = target;
  const conninfo = [
    `host=${keywordValue(host)}`,
    `port=${String(port)}`,
    `dbname=${keywordValue(database)}`,
    `user=${keywordValue(user)}`,
    `sslmode=${keywordValue(sslmode)}`,
  ].join(' ');
  const uriHost = host.includes(':') ? `[${host}]` : encodeURIComponent(host);
  const uri =
    `postgresql://${encodeURIComponent(user)}@${uriHost}:${String(port)}` +
    `/${encodeURIComponent(database)}?sslmode=${encodeURIComponent(sslmode)}`;
  return {
    connection: { host, port, database, user, sslmode },
    psql: `psql ${shellQuoted(conninfo)}`,
    uri,
  };
}
