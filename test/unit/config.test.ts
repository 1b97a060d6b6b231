// Proxy configuration: the defaults, the layers (file → environment → flags, each overriding the
// one before), the original pgvpd's names, and a ConfigError naming key and layer for bad input.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  ConfigError,
  configKeys,
  defaults,
  descriptions,
  loadConfig,
  modesOf,
  type ConfigKey,
  type ConfigSources,
  type ProxyConfig,
} from '../../proxy/config.js';

const dir = mkdtempSync(join(tmpdir(), 'pgvpd-config-test-'));
t.teardown(() => {
  rmSync(dir, { recursive: true, force: true });
});

let files = 0;
/** Writes a config file of these lines and returns its path. */
function configFile(...lines: string[]): string {
  files += 1;
  const path = join(dir, `pgvpd-${String(files)}.conf`);
  writeFileSync(path, lines.join('\n'));
  return path;
}

const knownList = configKeys.join(', ');

function loadError(sources: ConfigSources): unknown {
  try {
    loadConfig(sources);
  } catch (error) {
    return error;
  }
  return new Error('loadConfig accepted the configuration');
}

t.test('with no sources every setting has its documented default', (t) => {
  const expected: ProxyConfig = {
    mode: 'app',
    port: 6432,
    listen_host: '127.0.0.1',
    upstream_host: '127.0.0.1',
    upstream_port: 5432,
    tenant_separator: '.',
    value_separator: ':',
    context_variables: ['tenant_id'],
    tenant_pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$',
    role_pattern: '^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
    value_pattern: '^[A-Za-z0-9@._+-]{1,255}$',
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
    upstream_spares: 0,
    upstream_spare_lifetime: 5,
    control_url: undefined,
    control_pool_size: 2,
    log_level: 'info',
    pool_size: 20,
    pool_checkout_timeout: 5,
    pool_idle_timeout: 300,
    pool_max_lifetime: 3600,
    max_unauthenticated_per_address: 32,
    pool_ready_early: false,
    pool_mode: undefined,
    max_prepared_statements: 200,
    idle_in_transaction_timeout: 300,
    context_max_age: 60,
    instance_lease: 60,
    connect_as_passfile: undefined,
    connect_as_passwords: undefined,
    admin_port: undefined,
    admin_host: '127.0.0.1',
    public_port: undefined,
    public_host: '127.0.0.1',
    public_url: undefined,
    admin_control_url: undefined,
    connect_host: undefined,
    connect_port: undefined,
    connect_sslmode: undefined,
    rate_limit_invites: 10,
    rate_limit_public: 60,
    rate_limit_api: 600,
    admin_trust_proxy: [],
  };
  t.same(loadConfig(), expected);
  t.same(defaults, expected, 'the exported defaults are the same values');
  t.end();
});

t.test('a later layer overrides an earlier one, key by key', (t) => {
  const file = configFile(
    '# written for the layering test',
    'port = 7001',
    'upstream_port = 7002',
    'upstream_host = file-host',
    'log_level = warn',
  );
  const env = {
    PGVPD_UPSTREAM_PORT: '8002',
    PGVPD_UPSTREAM_HOST: 'env-host',
    PGVPD_HANDSHAKE_TIMEOUT: '12',
  };
  const flags = { upstream_host: 'flag-host', control_url: 'postgres://proxy@db/app' };
  const config = loadConfig({ file, env, flags });
  const cases: { key: keyof ProxyConfig; expected: unknown; from: string }[] = [
    { key: 'port', expected: 7001, from: 'the file, set nowhere else' },
    { key: 'log_level', expected: 'warn', from: 'the file, set nowhere else' },
    { key: 'upstream_port', expected: 8002, from: 'the environment over the file' },
    { key: 'handshake_timeout', expected: 12, from: 'the environment, set nowhere else' },
    { key: 'upstream_host', expected: 'flag-host', from: 'the flag over environment and file' },
    { key: 'control_url', expected: 'postgres://proxy@db/app', from: 'the flag only' },
    { key: 'listen_host', expected: '127.0.0.1', from: 'the default, set nowhere' },
  ];
  for (const c of cases) t.same(config[c.key], c.expected, `${c.key} comes from ${c.from}`);
  t.end();
});

t.test('connect_as_passwords comes from the environment only', (t) => {
  const lines = '*:*:*:org_role:secret\n*:*:*:other:pa\\:ss';
  t.equal(
    loadConfig({ env: { PGVPD_MODE: 'org', PGVPD_CONNECT_AS_PASSWORDS: lines } })
      .connect_as_passwords,
    lines,
  );
  t.match(loadError({ flags: { connect_as_passwords: lines } }), {
    name: 'ConfigError',
    message:
      /^flag --connect-as-passwords: connect_as_passwords is read from the environment only \(PGVPD_CONNECT_AS_PASSWORDS\); for a file of passwords use connect_as_passfile$/,
  });
  t.match(loadError({ file: configFile('connect_as_passwords = "*:*:*:org_role:secret"') }), {
    name: 'ConfigError',
    message:
      /^config file .*: connect_as_passwords is read from the environment only \(PGVPD_CONNECT_AS_PASSWORDS\); for a file of passwords use connect_as_passfile$/,
  });
  t.end();
});

t.test('flags that are undefined leave the lower layers alone', (t) => {
  const config = loadConfig({ env: { PGVPD_PORT: '7100' }, flags: { port: undefined } });
  t.equal(config.port, 7100);
  t.end();
});

t.test('the original pgvpd environment names set their keys', (t) => {
  const cases: { variable: string; value: string; key: keyof ProxyConfig; expected: unknown }[] = [
    { variable: 'PGVPD_HOST', value: '0.0.0.0', key: 'listen_host', expected: '0.0.0.0' },
    { variable: 'PGVPD_PORT', value: '6543', key: 'port', expected: 6543 },
    { variable: 'PGVPD_UPSTREAM_HOST', value: 'db', key: 'upstream_host', expected: 'db' },
    { variable: 'PGVPD_UPSTREAM_PORT', value: '5433', key: 'upstream_port', expected: 5433 },
    { variable: 'PGVPD_TENANT_SEPARATOR', value: '@', key: 'tenant_separator', expected: '@' },
    { variable: 'PGVPD_VALUE_SEPARATOR', value: '/', key: 'value_separator', expected: '/' },
    {
      variable: 'PGVPD_CONTEXT_VARIABLES',
      value: 'tenant_id, user ,role',
      key: 'context_variables',
      expected: ['tenant_id', 'user', 'role'],
    },
    {
      variable: 'PGVPD_BYPASS_NETWORKS',
      value: '10.0.0.0/8,::1',
      key: 'bypass_networks',
      expected: ['10.0.0.0/8', '::1'],
    },
    { variable: 'PGVPD_LOG_LEVEL', value: 'debug', key: 'log_level', expected: 'debug' },
    { variable: 'PGVPD_HANDSHAKE_TIMEOUT', value: '5', key: 'handshake_timeout', expected: 5 },
    { variable: 'PGVPD_TLS_CERT', value: '/c.pem', key: 'tls_cert', expected: '/c.pem' },
    { variable: 'PGVPD_UPSTREAM_TLS', value: 'true', key: 'upstream_tls', expected: true },
    {
      variable: 'PGVPD_UPSTREAM_TLS_VERIFY',
      value: 'false',
      key: 'upstream_tls_verify',
      expected: false,
    },
    {
      variable: 'PGVPD_UPSTREAM_TLS_CA',
      value: '/ca.pem',
      key: 'upstream_tls_ca',
      expected: '/ca.pem',
    },
  ];
  for (const c of cases) {
    const env = { [c.variable]: c.value };
    // tls_cert alone is refused (see below); give it its key so only the variable is tested.
    if (c.key === 'tls_cert') env.PGVPD_TLS_KEY = '/k.pem';
    t.same(loadConfig({ env })[c.key], c.expected, `${c.variable}=${c.value}`);
  }
  t.end();
});

t.test('a PGVPD_ variable that names no setting is ignored', (t) => {
  // The test harness itself sets PGVPD_TEST_RUN_DIR; unrelated variables must not break a start.
  t.same(
    loadConfig({ env: { PGVPD_TEST_RUN_DIR: '/tmp/x', PGVPD_LISTEN_HOST: '0.0.0.0' } }),
    defaults,
  );
  t.end();
});

t.test('values are read by the kind of their key', (t) => {
  const cases: {
    name: string;
    flags: Record<string, unknown>;
    key: keyof ProxyConfig;
    expected: unknown;
  }[] = [
    { name: 'a port from text', flags: { port: '0' }, key: 'port', expected: 0 },
    { name: 'the highest port', flags: { port: 65535 }, key: 'port', expected: 65535 },
    {
      name: 'fractional seconds',
      flags: { shutdown_timeout: '0.5' },
      key: 'shutdown_timeout',
      expected: 0.5,
    },
    {
      name: 'a boolean spelled on',
      flags: { upstream_tls: 'on' },
      key: 'upstream_tls',
      expected: true,
    },
    {
      name: 'a boolean spelled YES',
      flags: { upstream_tls: 'YES' },
      key: 'upstream_tls',
      expected: true,
    },
    {
      name: 'a boolean spelled 0',
      flags: { upstream_tls_verify: '0' },
      key: 'upstream_tls_verify',
      expected: false,
    },
    {
      name: 'a boolean given as a boolean',
      flags: { allow_password_without_tls: true },
      key: 'allow_password_without_tls',
      expected: true,
    },
    {
      name: 'a list given as an array',
      flags: { bypass_networks: ['10.0.0.0/8', '::1/128'] },
      key: 'bypass_networks',
      expected: ['10.0.0.0/8', '::1/128'],
    },
    {
      name: 'a list with empty items',
      flags: { context_variables: 'tenant_id,,user,' },
      key: 'context_variables',
      expected: ['tenant_id', 'user'],
    },
    {
      name: 'an empty optional is unset',
      flags: { control_url: '' },
      key: 'control_url',
      expected: undefined,
    },
    {
      name: 'a pool size from text',
      flags: { control_pool_size: '4' },
      key: 'control_pool_size',
      expected: 4,
    },
  ];
  for (const c of cases) t.same(loadConfig({ flags: c.flags })[c.key], c.expected, c.name);
  t.end();
});

t.test('a config file takes comments, blank lines and quoted values', (t) => {
  const file = configFile(
    '# pgvpd.conf',
    '',
    '   port = 7300   # trailing comment',
    "upstream_host = 'db.internal'",
    'tenant_pattern = "^[a-z]+$"',
    'superuser_bypass = postgres, migrator',
    'bypass_networks = 127.0.0.1/32',
    'context_variables=tenant_id,user',
    '',
  );
  const config = loadConfig({ file });
  t.equal(config.port, 7300);
  t.equal(config.upstream_host, 'db.internal');
  t.equal(config.tenant_pattern, '^[a-z]+$');
  t.same(config.superuser_bypass, ['postgres', 'migrator']);
  t.same(config.context_variables, ['tenant_id', 'user']);
  t.end();
});

t.test('a bad value is a ConfigError naming the key and the layer', (t) => {
  const file = (line: string): { file: string; where: string } => {
    const path = configFile(line);
    return { file: path, where: `config file ${path}` };
  };
  const upstreamPortInFile = file('upstream_port = abc');
  const levelInFile = file('log_level = verbose');
  const cases: { name: string; sources: ConfigSources; message: string }[] = [
    {
      name: 'a port that is not a number, in the file',
      sources: { file: upstreamPortInFile.file },
      message: `${upstreamPortInFile.where}: upstream_port must be a port number, got "abc"`,
    },
    {
      name: 'an unknown log level, in the file',
      sources: { file: levelInFile.file },
      message: `${levelInFile.where}: log_level must be trace|debug|info|warn|error|fatal|silent, got "verbose"`,
    },
    {
      name: 'a port out of range, in the environment',
      sources: { env: { PGVPD_UPSTREAM_PORT: '70000' } },
      message: 'environment PGVPD_UPSTREAM_PORT: upstream_port must be a port number, got "70000"',
    },
    {
      name: 'an empty port, in the environment',
      sources: { env: { PGVPD_PORT: '' } },
      message: 'environment PGVPD_PORT: port must be a port number, got ""',
    },
    {
      name: 'a negative port, under the original name',
      sources: { env: { PGVPD_PORT: '-1' } },
      message: 'environment PGVPD_PORT: port must be a port number, got "-1"',
    },
    {
      name: 'a fractional port, as a flag',
      sources: { flags: { port: 1.5 } },
      message: 'flag --port: port must be a port number, got 1.5',
    },
    {
      name: 'an empty listen host, under its original name',
      sources: { env: { PGVPD_HOST: '' } },
      message: 'environment PGVPD_HOST: listen_host must be a non-empty string, got ""',
    },
    {
      name: 'a zero handshake timeout, as a flag',
      sources: { flags: { handshake_timeout: 0 } },
      message:
        'flag --handshake-timeout: handshake_timeout must be a positive number of seconds, got 0',
    },
    {
      name: 'a negative handshake timeout, in the environment',
      sources: { env: { PGVPD_HANDSHAKE_TIMEOUT: '-3' } },
      message:
        'environment PGVPD_HANDSHAKE_TIMEOUT: handshake_timeout must be a positive number of seconds, got "-3"',
    },
    {
      name: 'an empty shutdown timeout, in the environment',
      sources: { env: { PGVPD_SHUTDOWN_TIMEOUT: '' } },
      message:
        'environment PGVPD_SHUTDOWN_TIMEOUT: shutdown_timeout must be a positive number of seconds, got ""',
    },
    {
      name: 'a boolean that is neither, in the environment',
      sources: { env: { PGVPD_UPSTREAM_TLS: 'maybe' } },
      message: 'environment PGVPD_UPSTREAM_TLS: upstream_tls must be true or false, got "maybe"',
    },
    {
      name: 'a pool size of zero, as a flag',
      sources: { flags: { control_pool_size: '0' } },
      message: 'flag --control-pool-size: control_pool_size must be a positive integer, got "0"',
    },
    {
      name: 'a negative number of spares, in the environment',
      sources: { env: { PGVPD_UPSTREAM_SPARES: '-1' } },
      message:
        'environment PGVPD_UPSTREAM_SPARES: upstream_spares must be an integer, 0 or more, got "-1"',
    },
    {
      name: 'a fractional number of spares, as a flag',
      sources: { flags: { upstream_spares: '1.5' } },
      message: 'flag --upstream-spares: upstream_spares must be an integer, 0 or more, got "1.5"',
    },
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.match(error, { name: 'ConfigError', message: c.message }, c.name);
  }
  t.end();
});

t.test('upstream_spares and upstream_spare_lifetime are bounded', (t) => {
  t.match(loadError({ flags: { upstream_spares: '65' } }), {
    name: 'ConfigError',
    message: 'upstream_spares must be at most 64, got 65 (set in flag --upstream-spares)',
  });
  t.match(loadError({ env: { PGVPD_UPSTREAM_SPARE_LIFETIME: '0.5' } }), {
    name: 'ConfigError',
    message:
      'upstream_spare_lifetime must be at least 1 second (each spare is replaced that often when unused), got 0.5 (set in environment PGVPD_UPSTREAM_SPARE_LIFETIME)',
  });
  t.equal(
    loadConfig({ flags: { upstream_spares: '64', upstream_spare_lifetime: '1' } }).upstream_spares,
    64,
  );
  t.end();
});

t.test('an unknown key is a ConfigError naming it, its layer and the known keys', (t) => {
  const path = configFile('port = 6432', 'tls_port = 6433');
  const cases: { name: string; sources: ConfigSources; message: string }[] = [
    {
      name: 'in the file',
      sources: { file: path },
      message: `config file ${path}: unknown setting "tls_port" (known: ${knownList})`,
    },
    {
      name: 'as a flag',
      sources: { flags: { upstream_prot: 5432 } as ConfigSources['flags'] },
      message: `flag upstream_prot: unknown setting "upstream_prot" (known: ${knownList})`,
    },
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.match(error, { message: c.message }, c.name);
  }
  t.end();
});

t.test('a file that cannot be read or parsed is a ConfigError naming it', (t) => {
  const missing = join(dir, 'missing.conf');
  const garbled = configFile('port = 6432', 'this line has no equals sign');
  const badKey = configFile('9port = 1');
  const cases: { name: string; sources: ConfigSources; message: string }[] = [
    {
      name: 'a missing file',
      sources: { file: missing },
      message: `config file ${missing}: ENOENT: no such file or directory, open '${missing}'`,
    },
    {
      name: 'a line without "="',
      sources: { file: garbled },
      message: `${garbled}:2: expected "key = value", got "this line has no equals sign"`,
    },
    {
      name: 'a key that starts with a digit',
      sources: { file: badKey },
      message: `${badKey}:1: expected "key = value", got "9port = 1"`,
    },
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.match(error, { message: c.message }, c.name);
  }
  t.end();
});

t.test('settings that contradict each other are refused after all layers', (t) => {
  const cases: { name: string; sources: ConfigSources; message: RegExp | string }[] = [
    {
      name: 'equal separators',
      sources: { env: { PGVPD_VALUE_SEPARATOR: '.' } },
      message: 'tenant_separator and value_separator must differ',
    },
    {
      name: 'a certificate without its key',
      sources: { flags: { tls_cert: '/c.pem' } },
      message: 'tls_cert and tls_key must be set together',
    },
    {
      name: 'a key without its certificate',
      sources: { env: { PGVPD_TLS_KEY: '/k.pem' } },
      message: 'tls_cert and tls_key must be set together',
    },
    {
      name: 'no context variables at all',
      sources: { file: configFile('context_variables = ,') },
      message: 'context_variables must name at least the tenant',
    },
    {
      name: 'a tenant pattern that is not a regular expression',
      sources: { flags: { tenant_pattern: '^[a-z' } },
      message: /^tenant_pattern is not a valid regular expression: /,
    },
    {
      name: 'a value pattern that is not a regular expression',
      sources: { env: { PGVPD_VALUE_PATTERN: '(' } },
      message: /^value_pattern is not a valid regular expression: /,
    },
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.match(error, { message: c.message }, c.name);
  }
  t.end();
});

t.test('a contradiction in one layer is resolved by a later one', (t) => {
  const config = loadConfig({
    env: { PGVPD_VALUE_SEPARATOR: '.' },
    flags: { tenant_separator: '@' },
  });
  t.equal(config.tenant_separator, '@');
  t.equal(config.value_separator, '.');
  t.end();
});

t.test('changing a loaded configuration leaves the defaults alone', (t) => {
  const config = loadConfig();
  config.superuser_bypass.push('intruder');
  config.context_variables.push('intruder');
  try {
    t.same(defaults.superuser_bypass, [], 'the default bypass list is unchanged');
    t.same(
      defaults.context_variables,
      ['tenant_id'],
      'the default context variables are unchanged',
    );
    t.same(loadConfig().superuser_bypass, [], 'the next load starts from the defaults');
  } finally {
    // Undo the change wherever it landed, so later tests in this process see the defaults.
    config.superuser_bypass.pop();
    config.context_variables.pop();
  }
  t.end();
});

t.test('superuser_bypass is served only from bypass_networks, which must be networks', (t) => {
  t.match(
    loadError({ flags: { superuser_bypass: 'postgres' } }),
    {
      name: 'ConfigError',
      message:
        "superuser_bypass needs bypass_networks: the client networks its users may connect from (PostgreSQL sees the proxy's address, not the client's, so its own pg_hba.conf rules by address do not apply)",
    },
    'a bypass list without networks is refused at load',
  );
  for (const bad of ['10.0.0.0/33', 'db.internal', '10.0.0.0/8/1', '::1/129', '10.0.0.0/x']) {
    t.match(
      loadError({ flags: { superuser_bypass: 'postgres', bypass_networks: bad } }),
      {
        name: 'ConfigError',
        message: `bypass_networks: ${JSON.stringify(bad)} is not a network (address/prefix, e.g. 10.0.0.0/8 or ::1/128)`,
      },
      `${bad} is refused`,
    );
  }
  const config = loadConfig({
    flags: { superuser_bypass: 'postgres', bypass_networks: '10.0.0.0/8, ::1' },
  });
  t.same(config.bypass_networks, ['10.0.0.0/8', '::1']);
  t.end();
});

t.test(
  'the ProxyConfig derived from the settings table has the fields and types it always had',
  (t) => {
    // The interface the table replaced, field for field; code that reads the config relies on it.
    interface Previous {
      mode: 'app' | 'org';
      port: number;
      listen_host: string;
      upstream_host: string;
      upstream_port: number;
      tenant_separator: string;
      value_separator: string;
      context_variables: string[];
      tenant_pattern: string;
      role_pattern: string;
      value_pattern: string;
      superuser_bypass: string[];
      bypass_networks: string[];
      handshake_timeout: number;
      shutdown_timeout: number;
      tls_cert: string | undefined;
      tls_key: string | undefined;
      upstream_tls: boolean;
      upstream_tls_verify: boolean;
      upstream_tls_ca: string | undefined;
      allow_password_without_tls: boolean;
      // Issue 15: spare connections for the dedicated pipe.
      upstream_spares: number;
      upstream_spare_lifetime: number;
      control_url: string | undefined;
      control_pool_size: number;
      log_level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
      pool_size: number;
      pool_checkout_timeout: number;
      pool_idle_timeout: number;
      pool_max_lifetime: number;
      max_unauthenticated_per_address: number;
      pool_ready_early: boolean;
      // Issue 14: transaction pooling.
      // Issue 15: unset is each mode's own default (org: session; app: no pool).
      pool_mode: 'session' | 'transaction' | undefined;
      max_prepared_statements: number;
      idle_in_transaction_timeout: number;
      context_max_age: number;
      instance_lease: number;
      connect_as_passfile: string | undefined;
      connect_as_passwords: string | undefined;
      // Issue 13: the HTTP control plane.
      admin_port: number | undefined;
      admin_host: string;
      public_port: number | undefined;
      public_host: string;
      public_url: string | undefined;
      admin_control_url: string | undefined;
      connect_host: string | undefined;
      connect_port: number | undefined;
      connect_sslmode: string | undefined;
      rate_limit_invites: number;
      rate_limit_public: number;
      rate_limit_api: number;
      admin_trust_proxy: string[];
    }
    // Each assignable to the other: the same fields, each of the same type (readonly aside).
    type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
    // A compile-time check: tsc fails here when the derived type differs in any field.
    const same: Same<ProxyConfig, Previous> = true;
    t.ok(same, 'ProxyConfig is the same type as before');
    t.end();
  },
);

t.test('each setting applies to the modes whose code reads it', (t) => {
  const of = (wanted: string): ConfigKey[] =>
    configKeys.filter((key) => modesOf(key).join(',') === wanted);
  t.same(of('app,org'), [
    'mode',
    'port',
    'listen_host',
    'upstream_host',
    'upstream_port',
    'handshake_timeout',
    'shutdown_timeout',
    'tls_cert',
    'tls_key',
    'upstream_tls',
    'upstream_tls_verify',
    'upstream_tls_ca',
    'control_url',
    'control_pool_size',
    'log_level',
    'pool_size',
    'pool_checkout_timeout',
    'pool_idle_timeout',
    'pool_max_lifetime',
    'max_unauthenticated_per_address',
    'pool_mode',
    'max_prepared_statements',
    'idle_in_transaction_timeout',
    'context_max_age',
    'instance_lease',
    'connect_as_passfile',
    'connect_as_passwords',
    'admin_port',
    'admin_host',
    'public_port',
    'public_host',
    'public_url',
    'admin_control_url',
    'connect_host',
    'connect_port',
    'connect_sslmode',
    'rate_limit_invites',
    'rate_limit_public',
    'rate_limit_api',
    'admin_trust_proxy',
  ]);
  t.same(of('app'), [
    'tenant_separator',
    'value_separator',
    'context_variables',
    'tenant_pattern',
    'value_pattern',
    'role_pattern',
    'superuser_bypass',
    'bypass_networks',
    'allow_password_without_tls',
    'upstream_spares',
    'upstream_spare_lifetime',
  ]);
  t.same(of('org'), ['pool_ready_early']);
  t.equal(
    of('app').length + of('org').length + of('app,org').length,
    configKeys.length,
    'no setting is left without a mode',
  );
  t.end();
});

t.test('the help of a setting for one mode names that mode', (t) => {
  t.equal(
    descriptions.pool_ready_early,
    "org mode: ready an idle pooled session while a known user derives its SCRAM key: faster logins, but a known user's refusal then comes later than an unknown user's",
  );
  t.equal(
    descriptions.superuser_bypass,
    'app mode: comma-separated usernames that pass through with no tenant (needs bypass_networks)',
  );
  t.equal(descriptions.port, 'port to listen on');
  t.end();
});

t.test('a setting given for a mode it does not apply to is refused from every layer', (t) => {
  const orgFile = configFile('mode = org', 'superuser_bypass = postgres');
  const bypassFile = configFile('superuser_bypass = postgres', 'bypass_networks = 10.0.0.0/8');
  const poolFile = configFile('pool_ready_early = true');
  const cases: { name: string; sources: ConfigSources; message: string }[] = [
    {
      name: 'an app-mode setting in the config file of an org-mode proxy',
      sources: { file: orgFile },
      message: `superuser_bypass applies to app mode only; this proxy runs in org mode (set in config file ${orgFile})`,
    },
    {
      name: 'an app-mode setting in the environment of an org-mode proxy',
      sources: { env: { PGVPD_MODE: 'org', PGVPD_SUPERUSER_BYPASS: 'postgres' } },
      message:
        'superuser_bypass applies to app mode only; this proxy runs in org mode (set in environment PGVPD_SUPERUSER_BYPASS)',
    },
    {
      name: 'an app-mode setting as a flag of an org-mode proxy',
      sources: { flags: { mode: 'org', tenant_separator: '@' } },
      message:
        'tenant_separator applies to app mode only; this proxy runs in org mode (set in flag --tenant-separator)',
    },
    {
      name: 'an org-mode setting in the config file of an app-mode proxy',
      sources: { file: poolFile },
      message: `pool_ready_early applies to org mode only; this proxy runs in app mode (set in config file ${poolFile})`,
    },
    {
      name: 'an org-mode setting in the environment of an app-mode proxy',
      sources: { env: { PGVPD_POOL_READY_EARLY: 'on' } },
      message:
        'pool_ready_early applies to org mode only; this proxy runs in app mode (set in environment PGVPD_POOL_READY_EARLY)',
    },
    {
      name: 'an org-mode setting as a flag of an app-mode proxy',
      sources: { flags: { pool_ready_early: true } },
      message:
        'pool_ready_early applies to org mode only; this proxy runs in app mode (set in flag --pool-ready-early)',
    },
    {
      name: 'a setting whose layer came before the one that chose the mode',
      sources: { file: bypassFile, flags: { mode: 'org' } },
      message: `superuser_bypass applies to app mode only; this proxy runs in org mode (set in config file ${bypassFile})`,
    },
    {
      name: 'a setting given in two layers, both named',
      sources: {
        file: poolFile,
        env: { PGVPD_POOL_READY_EARLY: 'false' },
      },
      message: `pool_ready_early applies to org mode only; this proxy runs in app mode (set in config file ${poolFile}, environment PGVPD_POOL_READY_EARLY)`,
    },
    {
      name: 'a setting given with its default value',
      sources: { env: { PGVPD_MODE: 'org', PGVPD_ALLOW_PASSWORD_WITHOUT_TLS: 'false' } },
      message:
        'allow_password_without_tls applies to app mode only; this proxy runs in org mode (set in environment PGVPD_ALLOW_PASSWORD_WITHOUT_TLS)',
    },
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.match(error, { name: 'ConfigError', message: c.message }, c.name);
    t.equal((error as Error).message, c.message, `${c.name}: the exact message`);
  }
  t.end();
});

t.test('each mode takes its own settings and the shared ones', (t) => {
  const org = loadConfig({
    env: { PGVPD_MODE: 'org', PGVPD_POOL_SIZE: '4' },
    flags: { upstream_host: 'db', connect_as_passfile: '/etc/pgvpd/passfile' },
  });
  t.same(
    [org.mode, org.pool_size, org.upstream_host, org.connect_as_passfile],
    ['org', 4, 'db', '/etc/pgvpd/passfile'],
  );
  const app = loadConfig({
    flags: { superuser_bypass: 'postgres', bypass_networks: '10.0.0.0/8', upstream_host: 'db' },
  });
  t.same([app.mode, app.superuser_bypass, app.upstream_host], ['app', ['postgres'], 'db']);
  t.end();
});

t.test('a context variable the database would refuse as a value name stops the proxy', (t) => {
  const rule =
    "each name after the first (the tenant's) must match ^[a-z_][a-z0-9_]{0,62}$ and not be tenant";
  const long = `a${'b'.repeat(63)}`;
  const cases: { name: string; sources: ConfigSources; message: string }[] = [
    {
      name: 'a dotted name, as a flag',
      sources: { flags: { context_variables: 'tenant_id,app.ctx_b' } },
      message: `context_variables: "app.ctx_b" is not a context value name the database accepts: ${rule} (set in flag --context-variables)`,
    },
    {
      name: 'an upper-case name, in the environment',
      sources: { env: { PGVPD_CONTEXT_VARIABLES: 'tenant_id,user,Plan' } },
      message: `context_variables: "Plan" is not a context value name the database accepts: ${rule} (set in environment PGVPD_CONTEXT_VARIABLES)`,
    },
    {
      name: 'a name that starts with a digit',
      sources: { flags: { context_variables: 'tenant_id,1st' } },
      message: `context_variables: "1st" is not a context value name the database accepts: ${rule} (set in flag --context-variables)`,
    },
    {
      name: 'a name of 64 characters',
      sources: { flags: { context_variables: `tenant_id,${long}` } },
      message: `context_variables: "${long}" is not a context value name the database accepts: ${rule} (set in flag --context-variables)`,
    },
    {
      name: 'the name tenant',
      sources: { flags: { context_variables: 'tenant_id,tenant' } },
      message: `context_variables: "tenant" is not a context value name the database accepts: ${rule} (set in flag --context-variables)`,
    },
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.equal((error as Error).message, c.message, c.name);
  }
  t.end();
});

t.test('context variables the database accepts as value names start the proxy', (t) => {
  const longest = `a${'b'.repeat(62)}`;
  const cases: { name: string; value: string; expected: string[] }[] = [
    {
      name: 'a name and user',
      value: 'tenant_id,plan_2,user',
      expected: ['tenant_id', 'plan_2', 'user'],
    },
    { name: 'a name that starts with _', value: 'tenant_id,_x', expected: ['tenant_id', '_x'] },
    {
      name: 'a name of 63 characters',
      value: `tenant_id,${longest}`,
      expected: ['tenant_id', longest],
    },
    {
      // The first name only labels the tenant and never reaches SQL; the original pgvpd's names
      // for it (a setting such as app.current_tenant_id) keep working.
      name: "the original pgvpd's setting name for the tenant",
      value: 'app.current_tenant_id,plan',
      expected: ['app.current_tenant_id', 'plan'],
    },
  ];
  for (const c of cases) {
    t.same(
      loadConfig({ flags: { context_variables: c.value } }).context_variables,
      c.expected,
      c.name,
    );
  }
  t.end();
});
