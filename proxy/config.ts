// Proxy configuration: defaults → config file → PGVPD_* environment → CLI flags, each layer
// overriding the one before. Option names follow the original pgvpd where they exist, so its
// documented settings keep their meaning. Every bad value is reported with the key that
// carried it and the layer it came from.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export interface ProxyConfig {
  /**
   * app: tenant from the username, authentication relayed (docs/app-mode.md). org: org from the
   * database name, users authenticated by the proxy against the catalog, upstream sessions
   * pooled (docs/org-mode.md).
   */
  mode: 'app' | 'org';
  /** Plain listener; TLS is negotiated on it through SSLRequest when tls_cert/tls_key are set. */
  port: number;
  listen_host: string;
  upstream_host: string;
  upstream_port: number;
  /** `<role><tenant_separator><tenant>[<value_separator><value>…]` */
  tenant_separator: string;
  value_separator: string;
  /**
   * Names of the values carried in the username, in order. The first names the tenant (kept for
   * compatibility with the original pgvpd, where it named the tenant setting); the others name
   * the extra context values, readable with pgvpd.context(name). A name `user` fills the
   * context's user.
   */
  context_variables: string[];
  /** Regular expression a tenant must match in full. */
  tenant_pattern: string;
  /** Regular expression the role part of a tenant username must match in full. */
  role_pattern: string;
  /** Regular expression each extra context value must match in full. */
  value_pattern: string;
  /**
   * Exact usernames that pass through with no tenant and no context (app mode). Empty by default:
   * upstream sees the proxy's address, not the client's, so PostgreSQL's own pg_hba.conf rules by
   * address no longer hold for them; they are served only from bypass_networks.
   */
  superuser_bypass: string[];
  /** Client networks (CIDR, e.g. 10.0.0.0/8, ::1/128) from which superuser_bypass users are served. */
  bypass_networks: string[];
  /** Seconds for startup + auth + context. */
  handshake_timeout: number;
  /** Seconds sessions may keep running after SIGTERM/SIGINT before they are ended. */
  shutdown_timeout: number;
  tls_cert: string | undefined;
  tls_key: string | undefined;
  upstream_tls: boolean;
  upstream_tls_verify: boolean;
  upstream_tls_ca: string | undefined;
  /**
   * MD5 cannot be relayed through a username rewrite, so the proxy asks the client for its
   * password and answers upstream's MD5 challenge itself. That password travels in the clear
   * unless the client is on TLS; this allows it without TLS (e.g. loopback only).
   */
  allow_password_without_tls: boolean;
  /** Connection string of the control connections (role pgvpd_proxy); pgpass is honoured. */
  control_url: string | undefined;
  control_pool_size: number;
  log_level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  /** Org mode: upstream sessions per (server, database, connect_as role). */
  pool_size: number;
  /** Org mode: seconds a client waits for a pooled session before 53300. */
  pool_checkout_timeout: number;
  /** Org mode: seconds an idle pooled session is kept. */
  pool_idle_timeout: number;
  /** Org mode: seconds after which a pooled session is closed instead of reused. */
  pool_max_lifetime: number;
  /**
   * Org mode: connections from one client address (IPv6: one /64) that may be between accept and
   * the end of authentication at once; more are refused at once with 53300.
   */
  max_unauthenticated_per_address: number;
  /** Org mode: pgpass-format file with the passwords of connect_as roles (mode 0600). */
  connect_as_passfile: string | undefined;
  /**
   * Org mode: passwords of connect_as roles as pgpass-format lines, consulted after
   * connect_as_passfile's. From the environment only (envOnlyKeys).
   */
  connect_as_passwords: string | undefined;
}

export const defaults: ProxyConfig = {
  mode: 'app',
  port: 6432,
  listen_host: '127.0.0.1',
  upstream_host: '127.0.0.1',
  upstream_port: 5432,
  tenant_separator: '.',
  value_separator: ':',
  context_variables: ['tenant_id'],
  tenant_pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$',
  value_pattern: '^[A-Za-z0-9@._+-]{1,255}$',
  role_pattern: '^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
  superuser_bypass: [],
  bypass_networks: [],
  handshake_timeout: 30,
  shutdown_timeout: 30,
  tls_cert: undefined,
  tls_key: undefined,
  upstream_tls: false,
  upstream_tls_verify: true,
  upstream_tls_ca: undefined,
  allow_password_without_tls: false,
  control_url: undefined,
  control_pool_size: 2,
  log_level: 'info',
  pool_size: 20,
  pool_checkout_timeout: 5,
  pool_idle_timeout: 300,
  pool_max_lifetime: 3600,
  max_unauthenticated_per_address: 32,
  connect_as_passfile: undefined,
  connect_as_passwords: undefined,
};

export type ConfigKey = keyof ProxyConfig;

/** One line per setting, for `pgvpd serve --help` and the docs. */
export const descriptions: Record<ConfigKey, string> = {
  mode: 'app (tenant from the username) or org (org from the database name, catalog users, pooling)',
  port: 'port to listen on',
  listen_host: 'address to listen on',
  upstream_host: 'PostgreSQL host',
  upstream_port: 'PostgreSQL port',
  tenant_separator: 'separator between role and tenant in the username',
  value_separator: 'separator between the tenant and extra context values',
  context_variables:
    'comma-separated names of the tenant and the extra values (a value named user fills the context user)',
  tenant_pattern: 'regular expression a tenant must match',
  value_pattern: 'regular expression each extra value must match',
  role_pattern: 'regular expression the role part of a tenant username must match',
  superuser_bypass:
    'comma-separated usernames that pass through with no tenant (needs bypass_networks)',
  bypass_networks:
    'comma-separated client networks (CIDR) from which superuser_bypass users are served',
  handshake_timeout: 'seconds allowed for startup, authentication and context',
  shutdown_timeout: 'seconds sessions may run on after SIGTERM/SIGINT before they are ended',
  tls_cert: 'PEM certificate for client TLS (with tls_key)',
  tls_key: 'PEM private key for client TLS',
  upstream_tls: 'connect to PostgreSQL over TLS',
  upstream_tls_verify: 'verify the upstream certificate and host name',
  upstream_tls_ca: 'PEM CA file trusted for the upstream certificate',
  allow_password_without_tls:
    'let the proxy ask for a password (MD5 upstream) on a connection without TLS',
  control_url:
    'connection string of the control connections (a pgvpd_proxy member); pgpass is honoured',
  control_pool_size: 'control connections per database',
  log_level: 'trace, debug, info, warn, error, fatal or silent',
  pool_size: 'org mode: pooled upstream sessions per server, database and role',
  pool_checkout_timeout: 'org mode: seconds a client waits for a pooled session',
  pool_idle_timeout: 'org mode: seconds an idle pooled session is kept',
  pool_max_lifetime: 'org mode: seconds before a pooled session is replaced',
  max_unauthenticated_per_address:
    'org mode: connections from one client address that may be logging in at once',
  connect_as_passfile: "org mode: pgpass-format file with the connect_as roles' passwords",
  connect_as_passwords:
    "org mode: the connect_as roles' passwords as pgpass-format lines, after connect_as_passfile's; environment only",
};

type Kind =
  'mode' | 'port' | 'string' | 'optional' | 'list' | 'boolean' | 'seconds' | 'count' | 'level';

const kinds: Record<ConfigKey, Kind> = {
  mode: 'mode',
  port: 'port',
  listen_host: 'string',
  upstream_host: 'string',
  upstream_port: 'port',
  tenant_separator: 'string',
  value_separator: 'string',
  context_variables: 'list',
  tenant_pattern: 'string',
  value_pattern: 'string',
  role_pattern: 'string',
  superuser_bypass: 'list',
  bypass_networks: 'list',
  handshake_timeout: 'seconds',
  shutdown_timeout: 'seconds',
  tls_cert: 'optional',
  tls_key: 'optional',
  upstream_tls: 'boolean',
  upstream_tls_verify: 'boolean',
  upstream_tls_ca: 'optional',
  allow_password_without_tls: 'boolean',
  control_url: 'optional',
  control_pool_size: 'count',
  log_level: 'level',
  pool_size: 'count',
  pool_checkout_timeout: 'seconds',
  pool_idle_timeout: 'seconds',
  pool_max_lifetime: 'seconds',
  max_unauthenticated_per_address: 'count',
  connect_as_passfile: 'optional',
  connect_as_passwords: 'optional',
};

export const configKeys = Object.keys(kinds) as ConfigKey[];

/**
 * Settings taken from the environment only: a password in a flag shows in `ps` and shell
 * history, and a config file of passwords is what connect_as_passfile (mode 0600) is for.
 */
export const envOnlyKeys: ReadonlySet<ConfigKey> = new Set(['connect_as_passwords']);

/** PGVPD_HOST is the original pgvpd's name for listen_host; every other key is PGVPD_<KEY>. */
export function envName(key: ConfigKey): string {
  return key === 'listen_host' ? 'PGVPD_HOST' : `PGVPD_${key.toUpperCase()}`;
}

/** `--listen-host` for listen_host. */
export function flagName(key: ConfigKey): string {
  return `--${key.replaceAll('_', '-')}`;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

function coerce(key: ConfigKey, raw: unknown, where: string): unknown {
  const bad = (expected: string): never => {
    throw new ConfigError(`${where}: ${key} must be ${expected}, got ${JSON.stringify(raw)}`);
  };
  const text = typeof raw === 'number' || typeof raw === 'boolean' ? String(raw) : raw;
  switch (kinds[key]) {
    case 'string':
      if (typeof text !== 'string' || text === '') return bad('a non-empty string');
      return text;
    case 'optional':
      if (typeof text !== 'string') return bad('a string');
      return text === '' ? undefined : text;
    case 'list':
      if (Array.isArray(raw)) return raw.map(String);
      if (typeof text !== 'string') return bad('a comma-separated list');
      return text
        .split(',')
        .map((item) => item.trim())
        .filter((item) => item !== '');
    case 'boolean':
      if (typeof text === 'string' && /^(true|on|yes|1)$/i.test(text)) return true;
      if (typeof text === 'string' && /^(false|off|no|0)$/i.test(text)) return false;
      return bad('true or false');
    case 'port': {
      const value = typeof text === 'string' && text.trim() === '' ? NaN : Number(text);
      if (!Number.isInteger(value) || value < 0 || value > 65535) return bad('a port number');
      return value;
    }
    case 'seconds': {
      const value = Number(text);
      if (typeof text !== 'string' || text === '' || !Number.isFinite(value) || value <= 0) {
        return bad('a positive number of seconds');
      }
      return value;
    }
    case 'count': {
      const value = typeof text === 'string' && text.trim() === '' ? NaN : Number(text);
      if (!Number.isInteger(value) || value < 1) return bad('a positive integer');
      return value;
    }
    case 'mode':
      if (text !== 'app' && text !== 'org') return bad('app or org');
      return text;
    case 'level':
      if (typeof text !== 'string' || !levels.includes(text)) return bad(levels.join('|'));
      return text;
  }
}

/** `key = value` lines; `#` starts a comment; values may be quoted. The original pgvpd's format. */
export function parseConfigFile(text: string, path: string): Record<string, string> {
  const values: Record<string, string> = {};
  text.split(/\r?\n/).forEach((line, index) => {
    const trimmed = line.replace(/(^|\s)#.*$/, '').trim();
    if (trimmed === '') return;
    const match = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(trimmed);
    if (!match)
      throw new ConfigError(`${path}:${index + 1}: expected "key = value", got "${line.trim()}"`);
    const [, key = '', raw = ''] = match;
    values[key] = /^(["']).*\1$/.test(raw) ? raw.slice(1, -1) : raw;
  });
  return values;
}

export interface ConfigSources {
  /** Path of a pgvpd.conf file. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Values from CLI flags (or code), by config key; undefined entries are ignored. */
  flags?: Partial<Record<ConfigKey, unknown>>;
}

function isKey(key: string): key is ConfigKey {
  return Object.hasOwn(kinds, key);
}

export function loadConfig(sources: ConfigSources = {}): ProxyConfig {
  // Lists are copied: a loaded config must never share (and so change) the defaults' arrays.
  const config: Record<string, unknown> = {
    ...defaults,
    context_variables: [...defaults.context_variables],
    superuser_bypass: [...defaults.superuser_bypass],
    bypass_networks: [...defaults.bypass_networks],
  };
  const apply = (key: string, raw: unknown, where: string, fromEnv = false): void => {
    if (!isKey(key)) {
      throw new ConfigError(`${where}: unknown setting "${key}" (known: ${configKeys.join(', ')})`);
    }
    if (envOnlyKeys.has(key) && !fromEnv) {
      throw new ConfigError(
        `${where}: ${key} is read from the environment only (${envName(key)}); for a file of passwords use connect_as_passfile`,
      );
    }
    config[key] = coerce(key, raw, where);
  };
  if (sources.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (error) {
      throw new ConfigError(`config file ${sources.file}: ${(error as Error).message}`);
    }
    for (const [key, value] of Object.entries(parseConfigFile(text, sources.file))) {
      apply(key, value, `config file ${sources.file}`);
    }
  }
  const env = sources.env ?? {};
  for (const key of configKeys) {
    const value = env[envName(key)];
    if (value !== undefined) apply(key, value, `environment ${envName(key)}`, true);
  }
  for (const [key, value] of Object.entries(sources.flags ?? {})) {
    if (value !== undefined) apply(key, value, `flag ${isKey(key) ? flagName(key) : key}`);
  }
  return validate(config as unknown as ProxyConfig);
}

function validate(config: ProxyConfig): ProxyConfig {
  for (const key of ['tenant_pattern', 'value_pattern', 'role_pattern'] as const) {
    try {
      new RegExp(config[key], 'u');
    } catch (error) {
      throw new ConfigError(
        `${key} is not a valid regular expression: ${(error as Error).message}`,
      );
    }
  }
  if (config.tenant_separator === config.value_separator) {
    throw new ConfigError('tenant_separator and value_separator must differ');
  }
  if (config.context_variables.length === 0) {
    throw new ConfigError('context_variables must name at least the tenant');
  }
  if ((config.tls_cert === undefined) !== (config.tls_key === undefined)) {
    throw new ConfigError('tls_cert and tls_key must be set together');
  }
  for (const network of config.bypass_networks) parseNetwork(network);
  if (config.superuser_bypass.length > 0 && config.bypass_networks.length === 0) {
    throw new ConfigError(
      'superuser_bypass needs bypass_networks: the client networks its users may connect from ' +
        "(PostgreSQL sees the proxy's address, not the client's, so its own pg_hba.conf rules by address do not apply)",
    );
  }
  return config;
}

/** `10.0.0.0/8`, `::1/128`, or a bare address (a network of one): address, prefix, family. */
export function parseNetwork(text: string): {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
} {
  const [address = '', prefixText, extra] = text.split('/');
  const version = isIP(address);
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (
    version === 0 ||
    extra !== undefined ||
    (prefixText !== undefined && !/^[0-9]{1,3}$/.test(prefixText)) ||
    !Number.isInteger(prefix) ||
    prefix < 0 ||
    prefix > max
  ) {
    throw new ConfigError(
      `bypass_networks: ${JSON.stringify(text)} is not a network (address/prefix, e.g. 10.0.0.0/8 or ::1/128)`,
    );
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}
