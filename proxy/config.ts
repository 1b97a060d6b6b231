// Proxy configuration: defaults → config file → PGVPD_* environment → CLI flags, each layer
// overriding the one before. Option names follow the original pgvpd where they exist, so its
// documented settings keep their meaning. Every bad value is reported with the key that
// carried it and the layer it came from.
//
// Each setting is declared once, in `settings` below: its kind, default, the modes it applies
// to, its help text and where it may come from. The ProxyConfig type, `defaults`, the CLI flags
// (cli/commands/serve.ts), the environment variable names and docs/settings.md
// (proxy/settings-doc.ts, written by `make settings-doc`) are all derived from it.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export type Mode = 'app' | 'org';

const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
/** How long a pooled backend serves one client (pool_mode). */
export const poolModes = ['session', 'transaction'] as const;
export type PoolMode = (typeof poolModes)[number];

/** The value type of each kind of setting. */
interface KindValues {
  mode: Mode;
  port: number;
  /** A port that may be left unset (no listener). */
  optional_port: number | undefined;
  string: string;
  optional: string | undefined;
  list: string[];
  boolean: boolean;
  seconds: number;
  count: number;
  /** A count that may be 0 (none). */
  count_or_zero: number;
  level: (typeof logLevels)[number];
  /** Unset: org mode pools per session, app mode gives each client a backend of its own. */
  pool_mode: (typeof poolModes)[number] | undefined;
}

export type Kind = keyof KindValues;

interface SettingOf<K extends Kind> {
  readonly kind: K;
  /** Lists are copied out of the table, so a loaded config never shares an array with it. */
  readonly default: K extends 'list' ? readonly string[] : KindValues[K];
  /** The modes that read the setting; given for another mode it is refused by loadConfig. */
  readonly modes: readonly Mode[];
  /** One line, for `pgvpd serve --help` and docs/settings.md. */
  readonly help: string;
  /** The environment variable, when it is not PGVPD_<KEY>. */
  readonly env?: string;
  /** Read from the environment only: no flag, refused in a config file. */
  readonly envOnly?: true;
}

/** One setting of any kind: its default is checked against its kind. */
export type Setting = { [K in Kind]: SettingOf<K> }[Kind];

const both = ['app', 'org'] as const;
const appOnly = ['app'] as const;
const orgOnly = ['org'] as const;

/** upstream_spares' bound: each spare is a waiting server process. */
const maxUpstreamSpares = 64;

export const settings = {
  /**
   * app: tenant from the username, authentication relayed (docs/app-mode.md). org: org from the
   * database name, users authenticated by the proxy against the catalog, upstream sessions
   * pooled (docs/org-mode.md).
   */
  mode: {
    kind: 'mode',
    default: 'app',
    modes: both,
    help: 'app (tenant from the username) or org (org from the database name, catalog users, pooling)',
  },
  /** Plain listener; TLS is negotiated on it through SSLRequest when tls_cert/tls_key are set. */
  port: { kind: 'port', default: 6432, modes: both, help: 'port to listen on' },
  listen_host: {
    kind: 'string',
    default: '127.0.0.1',
    modes: both,
    help: 'address to listen on',
    env: 'PGVPD_HOST', // the original pgvpd's name
  },
  /** In org mode, the server of catalog servers that name no host (the shared placement). */
  upstream_host: { kind: 'string', default: '127.0.0.1', modes: both, help: 'PostgreSQL host' },
  upstream_port: { kind: 'port', default: 5432, modes: both, help: 'PostgreSQL port' },
  /** `<role><tenant_separator><tenant>[<value_separator><value>…]` */
  tenant_separator: {
    kind: 'string',
    default: '.',
    modes: appOnly,
    help: 'separator between role and tenant in the username',
  },
  value_separator: {
    kind: 'string',
    default: ':',
    modes: appOnly,
    help: 'separator between the tenant and extra context values',
  },
  /**
   * Names of the values carried in the username, in order. The first names the tenant (kept for
   * compatibility with the original pgvpd, where it named the tenant setting); the others name
   * the extra context values, readable with pgvpd.context(name), and must be names the database
   * accepts (contextValueName). A name `user` fills the context's user.
   */
  context_variables: {
    kind: 'list',
    default: ['tenant_id'],
    modes: appOnly,
    help: 'comma-separated names of the tenant and the extra values (a value named user fills the context user)',
  },
  /** Regular expression a tenant must match in full. */
  tenant_pattern: {
    kind: 'string',
    default: '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$',
    modes: appOnly,
    help: 'regular expression a tenant must match',
  },
  /** Regular expression each extra context value must match in full. */
  value_pattern: {
    kind: 'string',
    default: '^[A-Za-z0-9@._+-]{1,255}$',
    modes: appOnly,
    help: 'regular expression each extra value must match',
  },
  /** Regular expression the role part of a tenant username must match in full. */
  role_pattern: {
    kind: 'string',
    default: '^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
    modes: appOnly,
    help: 'regular expression the role part of a tenant username must match',
  },
  /**
   * Exact usernames that pass through with no tenant and no context. Empty by default: upstream
   * sees the proxy's address, not the client's, so PostgreSQL's own pg_hba.conf rules by address
   * no longer hold for them; they are served only from bypass_networks.
   */
  superuser_bypass: {
    kind: 'list',
    default: [],
    modes: appOnly,
    help: 'comma-separated usernames that pass through with no tenant (needs bypass_networks)',
  },
  /** Client networks (CIDR, e.g. 10.0.0.0/8, ::1/128) from which superuser_bypass users are served. */
  bypass_networks: {
    kind: 'list',
    default: [],
    modes: appOnly,
    help: 'comma-separated client networks (CIDR) from which superuser_bypass users are served',
  },
  /** Seconds for startup + auth + context. */
  handshake_timeout: {
    kind: 'seconds',
    default: 30,
    modes: both,
    help: 'seconds allowed for startup, authentication and context',
  },
  /** Seconds sessions may keep running after SIGTERM/SIGINT before they are ended. */
  shutdown_timeout: {
    kind: 'seconds',
    default: 30,
    modes: both,
    help: 'seconds sessions may run on after SIGTERM/SIGINT before they are ended',
  },
  tls_cert: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: 'PEM certificate for client TLS (with tls_key)',
  },
  tls_key: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: 'PEM private key for client TLS',
  },
  /** In org mode, for the servers of the catalog that name no host; the others say their own. */
  upstream_tls: {
    kind: 'boolean',
    default: false,
    modes: both,
    help: 'connect to PostgreSQL over TLS',
  },
  upstream_tls_verify: {
    kind: 'boolean',
    default: true,
    modes: both,
    help: 'verify the upstream certificate and host name',
  },
  /** In org mode, trusted for every server of the catalog. */
  upstream_tls_ca: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: 'PEM CA file trusted for the upstream certificate',
  },
  /**
   * MD5 cannot be relayed through a username rewrite, so the proxy asks the client for its
   * password and answers upstream's MD5 challenge itself. That password travels in the clear
   * unless the client is on TLS; this allows it without TLS (e.g. loopback only). Org mode checks
   * passwords itself with SCRAM and never asks for one this way.
   */
  allow_password_without_tls: {
    kind: 'boolean',
    default: false,
    modes: appOnly,
    help: 'let the proxy ask for a password (MD5 upstream) on a connection without TLS',
  },
  /**
   * Connections to PostgreSQL kept open ahead of the clients, nothing sent on them (PostgreSQL has
   * already started their backend process): a client of the dedicated pipe takes one instead of
   * waiting for a new connection and the server's process start (upstream/spares.ts). Off by
   * default: each spare is a waiting server process. Pooled tenants (pool_mode) do not take
   * them (the pool keeps logged-in backends); bypass users on the dedicated pipe do.
   */
  upstream_spares: {
    kind: 'count_or_zero',
    default: 0,
    modes: appOnly,
    help: 'connections to PostgreSQL opened ahead of the clients of the dedicated pipe (a client takes one: no wait for the server to start its process); 0 = none, at most 64',
  },
  /**
   * Below the server's authentication_timeout, which ends a connection that sends nothing. Short:
   * a spare's server process keeps the server's pg_hba.conf rules and state of when it started.
   */
  upstream_spare_lifetime: {
    kind: 'seconds',
    default: 5,
    modes: appOnly,
    help: "seconds (1 or more) a spare connection waits unused before it is replaced: a pg_hba.conf reload reaches the spares opened after it, so keep it short, and below the server's authentication_timeout (60 s by default)",
  },
  /** Connection string of the control connections (role pgvpd_proxy); pgpass is honoured. */
  control_url: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: 'connection string of the control connections (a pgvpd_proxy member; required); pgpass is honoured',
  },
  control_pool_size: {
    kind: 'count',
    default: 2,
    modes: both,
    help: 'control connections per database',
  },
  log_level: {
    kind: 'level',
    default: 'info',
    modes: both,
    help: 'trace, debug, info, warn, error, fatal or silent',
  },
  /** Upstream sessions per (server, database, role): org's connect_as role, app's username role. */
  pool_size: {
    kind: 'count',
    default: 20,
    modes: both,
    help: 'pooled upstream sessions per server, database and role (org mode: the connect_as role; app mode with pool_mode: the role of the username)',
  },
  /** Seconds a client waits for a pooled session before 53300. */
  pool_checkout_timeout: {
    kind: 'seconds',
    default: 5,
    modes: both,
    help: 'seconds a client waits for a pooled session; then FATAL 53300 naming the role, database, size and wait',
  },
  /** Seconds an idle pooled session is kept. */
  pool_idle_timeout: {
    kind: 'seconds',
    default: 300,
    modes: both,
    help: 'seconds an idle pooled session is kept',
  },
  /** Seconds after which a pooled session is closed instead of reused. */
  pool_max_lifetime: {
    kind: 'seconds',
    default: 3600,
    modes: both,
    help: 'seconds after which a pooled session is closed on release instead of reused',
  },
  /**
   * Connections from one client address (IPv6: one /64) that may be between accept and the end
   * of authentication at once; more are refused at once with 53300.
   */
  max_unauthenticated_per_address: {
    kind: 'count',
    default: 32,
    modes: both,
    help: 'connections from one client address that may be logging in at once (app mode: with pool_mode only)',
  },
  /**
   * Off by default: the readying runs while the client's answer is due, so a known user's wrong
   * password would be answered measurably later than an unknown user's (invariant 7.7).
   */
  pool_ready_early: {
    kind: 'boolean',
    default: false,
    modes: orgOnly,
    help: "ready an idle pooled session while a known user derives its SCRAM key: faster logins, but a known user's refusal then comes later than an unknown user's",
  },
  /**
   * How long a pooled backend stays with one client: `session` (from login to logout) or
   * `transaction` (from a client's first message to the ReadyForQuery that ends its transaction).
   * Org mode: per org in the catalog (pgvpd.org_set_pool_mode); this is the default for orgs
   * without one, and unset means session. App mode: unset (the default) gives every client a
   * backend of its own, authenticated by PostgreSQL; session or transaction pools per (database,
   * role), the proxy checking the role's own SCRAM verifier (docs/app-mode.md).
   */
  pool_mode: {
    kind: 'pool_mode',
    default: undefined,
    modes: both,
    help: 'how long a pooled backend serves one client: session or transaction. org mode: for orgs that do not set it, unset = session; app mode: unset = a dedicated backend per client (no pool)',
  },
  /** Named statements kept per pooled backend in transaction mode (least recently used closed). */
  max_prepared_statements: {
    kind: 'count',
    default: 200,
    modes: both,
    help: 'prepared statements kept per pooled backend in transaction mode; the least recently used is closed beyond it',
  },
  /** Transaction mode: a client idle inside a transaction this long gets FATAL 25P03. */
  idle_in_transaction_timeout: {
    kind: 'seconds',
    default: 300,
    modes: both,
    help: 'transaction mode: seconds a client may hold a pooled backend idle inside a transaction; then FATAL 25P03 and ROLLBACK',
  },
  /**
   * A pooled backend keeps its owner's context between clients (sticky ownership); a context older
   * than this is switched in again at the next checkout, rerunning the resolvers.
   */
  context_max_age: {
    kind: 'seconds',
    default: 60,
    modes: both,
    help: "seconds a pooled backend keeps an owner's context (and its resolver values) before the next checkout switches it in again",
  },
  /**
   * Each proxy registers with each database it switches contexts in and gets a key for its
   * switch grants; the registration lives this long unless renewed (every third of it).
   */
  instance_lease: {
    kind: 'seconds',
    default: 60,
    modes: both,
    help: "seconds the proxy's registration (and its switch-grant key) lives in a database unless renewed, every third of it",
  },
  /** pgpass-format file with the passwords of connect_as roles (mode 0600). */
  connect_as_passfile: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: "pgpass-format file with the connect_as roles' passwords (app mode with pool_mode: application roles' passwords, used only when the server does not ask for SCRAM)",
  },
  /**
   * Passwords of connect_as roles as pgpass-format lines, consulted after connect_as_passfile's.
   * From the environment only: a password in a flag shows in `ps` and shell history, and a config
   * file of passwords is what connect_as_passfile (mode 0600) is for.
   */
  connect_as_passwords: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: "the connect_as roles' passwords as pgpass-format lines, after connect_as_passfile's",
    envOnly: true,
  },
  // The HTTP control plane (proxy/admin/, docs/control-plane.md §2).
  /** Unset: no HTTP server. Every route, authenticated by API tokens (pgvpd_api). */
  admin_port: {
    kind: 'optional_port',
    default: undefined,
    modes: both,
    help: 'port of the HTTP control plane (health, metrics, status, orgs, users, invites, /setup); unset: none',
  },
  admin_host: {
    kind: 'string',
    default: '127.0.0.1',
    modes: both,
    help: 'address of the HTTP control plane',
  },
  /** A second HTTP listener with the public routes only: /setup, invites, validate, health. */
  public_port: {
    kind: 'optional_port',
    default: undefined,
    modes: both,
    help: 'port of a second HTTP listener with only the public routes (/setup, invites, validate, health)',
  },
  public_host: {
    kind: 'string',
    default: '127.0.0.1',
    modes: both,
    help: 'address of the public HTTP listener',
  },
  /** The origin put in setup links; the admin listener's own when unset. */
  public_url: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: "origin printed in setup links, e.g. https://db.example.com (default: the admin listener's)",
  },
  /** The HTTP server's database login: a member of pgvpd_api (and of pgvpd_proxy if shared). */
  admin_control_url: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: "connection string of the HTTP control plane's login (a pgvpd_api member; default: control_url)",
  },
  /** What /setup and invite redeem print for connecting; never taken from a request. */
  connect_host: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: 'host printed for connecting after an invite is redeemed (default: listen_host)',
  },
  connect_port: {
    kind: 'optional_port',
    default: undefined,
    modes: both,
    help: 'port printed for connecting after an invite is redeemed (default: port)',
  },
  connect_sslmode: {
    kind: 'optional',
    default: undefined,
    modes: both,
    help: 'sslmode printed after an invite is redeemed (default: verify-full with tls_cert, else prefer)',
  },
  rate_limit_invites: {
    kind: 'count',
    default: 10,
    modes: both,
    help: 'requests per minute per client address to /api/v1/invites/* together',
  },
  rate_limit_public: {
    kind: 'count',
    default: 60,
    modes: both,
    help: 'requests per minute per client address to /api/v1/validate/* and to /setup*',
  },
  rate_limit_api: {
    kind: 'count',
    default: 600,
    modes: both,
    help: 'requests per minute per client address to the authenticated HTTP routes',
  },
  /**
   * The reverse proxies (addresses or CIDRs) whose X-Forwarded-For the HTTP listeners believe:
   * the client address (rate limits, logs) is then the forwarded one. Empty: the socket's.
   */
  admin_trust_proxy: {
    kind: 'list',
    default: [],
    modes: both,
    help: 'comma-separated reverse proxies (addresses, CIDRs) whose X-Forwarded-For the HTTP server believes',
  },
} as const satisfies Record<string, Setting>;

type Settings = typeof settings;

/** The loaded configuration: one field per setting, typed by its kind. */
export type ProxyConfig = { -readonly [K in keyof Settings]: KindValues[Settings[K]['kind']] };

export type ConfigKey = keyof Settings;

/** The table seen one setting at a time, with every optional fact. */
const table: Record<ConfigKey, Setting> = settings;

export const configKeys = Object.keys(settings) as ConfigKey[];

/** A setting's default, lists copied. */
function defaultOf(key: ConfigKey): unknown {
  const value: unknown = table[key].default;
  return Array.isArray(value) ? [...(value as string[])] : value;
}

function defaultConfig(): ProxyConfig {
  return Object.fromEntries(configKeys.map((key) => [key, defaultOf(key)])) as ProxyConfig;
}

export const defaults: ProxyConfig = defaultConfig();

/** The modes a setting applies to. */
export function modesOf(key: ConfigKey): readonly Mode[] {
  return table[key].modes;
}

/**
 * One line per setting, for `pgvpd serve --help`: the help text, after the mode when the setting
 * applies to one mode only.
 */
export const descriptions = Object.fromEntries(
  configKeys.map((key) => {
    const { modes, help } = table[key];
    return [key, modes.length === 1 ? `${String(modes[0])} mode: ${help}` : help];
  }),
) as Record<ConfigKey, string>;

/**
 * Settings taken from the environment only: a password in a flag shows in `ps` and shell
 * history, and a config file of passwords is what connect_as_passfile (mode 0600) is for.
 */
export const envOnlyKeys: ReadonlySet<ConfigKey> = new Set(
  configKeys.filter((key) => table[key].envOnly === true),
);

/** PGVPD_<KEY>, or the name the table gives (PGVPD_HOST, the original pgvpd's name for listen_host). */
export function envName(key: ConfigKey): string {
  return table[key].env ?? `PGVPD_${key.toUpperCase()}`;
}

/** `--listen-host` for listen_host. */
export function flagName(key: ConfigKey): string {
  return `--${key.replaceAll('_', '-')}`;
}

/**
 * The names the database accepts for an extra context value: this pattern, and not `tenant`.
 * The other copy of this rule is in SQL, in pgvpd_private.issue (called by pgvpd.issue_context;
 * migration 000007-issue-without-bounded-repetition.sql), which refuses any other name with
 * 22023: `length(k) > 63 or k !~ '^[a-z_][a-z0-9_]*$' or k in ('tenant', 'user')`, the same set.
 * `user` is not refused here because the proxy never sends it as a value name: a value named
 * user fills the context's user.
 */
export const contextValueName = /^[a-z_][a-z0-9_]{0,62}$/;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function coerce(key: ConfigKey, raw: unknown, where: string): unknown {
  const bad = (expected: string): never => {
    throw new ConfigError(`${where}: ${key} must be ${expected}, got ${JSON.stringify(raw)}`);
  };
  const text = typeof raw === 'number' || typeof raw === 'boolean' ? String(raw) : raw;
  switch (table[key].kind) {
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
    case 'optional_port': {
      if (text === '') return undefined;
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
    case 'count_or_zero': {
      const value = typeof text === 'string' && text.trim() === '' ? NaN : Number(text);
      if (!Number.isInteger(value) || value < 0) return bad('an integer, 0 or more');
      return value;
    }
    case 'mode':
      if (text !== 'app' && text !== 'org') return bad('app or org');
      return text;
    case 'level':
      if (typeof text !== 'string' || !(logLevels as readonly string[]).includes(text)) {
        return bad(logLevels.join('|'));
      }
      return text;
    case 'pool_mode':
      if (text === '') return undefined;
      if (typeof text !== 'string' || !(poolModes as readonly string[]).includes(text)) {
        return bad(poolModes.join(' or '));
      }
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
  return Object.hasOwn(settings, key);
}

/** The layers that gave each setting, in order: `config file …`, `environment …`, `flag …`. */
type Origins = Map<ConfigKey, string[]>;

export function loadConfig(sources: ConfigSources = {}): ProxyConfig {
  // A fresh copy: a loaded config must never share (and so change) the defaults' arrays.
  const config: Record<string, unknown> = defaultConfig();
  const origins: Origins = new Map();
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
    origins.set(key, [...(origins.get(key) ?? []), where]);
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
  const loaded = config as unknown as ProxyConfig;
  checkModes(loaded.mode, origins);
  return validate(loaded, origins);
}

/** `(set in environment PGVPD_X)`, or every layer that gave the setting. */
function setIn(key: ConfigKey, origins: Origins): string {
  const layers = origins.get(key);
  return layers === undefined ? '(its default)' : `(set in ${layers.join(', ')})`;
}

/** A setting given for a mode it does not apply to is a mistake, whichever layer gave it. */
function checkModes(mode: Mode, origins: Origins): void {
  for (const key of origins.keys()) {
    const modes = modesOf(key);
    if (!modes.includes(mode)) {
      throw new ConfigError(
        `${key} applies to ${modes.join(' and ')} mode only; this proxy runs in ${mode} mode ${setIn(key, origins)}`,
      );
    }
  }
}

/** libpq's sslmode values, for connect_sslmode. */
const sslModes = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

function validate(config: ProxyConfig, origins: Origins): ProxyConfig {
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
  // The first name only labels the tenant and never reaches SQL; the others are sent as the
  // names of the context values, which the database checks again on every login.
  for (const name of config.context_variables.slice(1)) {
    if (!contextValueName.test(name) || name === 'tenant') {
      throw new ConfigError(
        `context_variables: ${JSON.stringify(name)} is not a context value name the database accepts: ` +
          `each name after the first (the tenant's) must match ${contextValueName.source} and not be tenant ` +
          setIn('context_variables', origins),
      );
    }
  }
  if ((config.tls_cert === undefined) !== (config.tls_key === undefined)) {
    throw new ConfigError('tls_cert and tls_key must be set together');
  }
  for (const network of config.bypass_networks) parseNetwork(network);
  for (const peer of config.admin_trust_proxy) {
    try {
      parseNetwork(peer);
    } catch {
      throw new ConfigError(
        `admin_trust_proxy: ${JSON.stringify(peer)} is not an address or network (e.g. 10.0.0.5 or 10.0.0.0/8) ${setIn('admin_trust_proxy', origins)}`,
      );
    }
  }
  if (config.connect_sslmode !== undefined && !sslModes.includes(config.connect_sslmode)) {
    throw new ConfigError(
      `connect_sslmode must be one of ${sslModes.join(', ')}, got ${JSON.stringify(config.connect_sslmode)} ${setIn('connect_sslmode', origins)}`,
    );
  }
  if (config.public_port !== undefined && config.admin_port === undefined) {
    throw new ConfigError(
      `public_port needs admin_port: the public listener is part of the HTTP control plane ${setIn('public_port', origins)}`,
    );
  }
  if (config.upstream_spares > maxUpstreamSpares) {
    throw new ConfigError(
      `upstream_spares must be at most ${String(maxUpstreamSpares)}, got ${String(config.upstream_spares)} ${setIn('upstream_spares', origins)}`,
    );
  }
  if (config.upstream_spare_lifetime < 1) {
    throw new ConfigError(
      `upstream_spare_lifetime must be at least 1 second (each spare is replaced that often when unused), got ${String(config.upstream_spare_lifetime)} ${setIn('upstream_spare_lifetime', origins)}`,
    );
  }
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
