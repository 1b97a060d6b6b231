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
  loadConfig,
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
  t.equal(loadConfig({ env: { PGVPD_CONNECT_AS_PASSWORDS: lines } }).connect_as_passwords, lines);
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
  ];
  for (const c of cases) {
    const error = loadError(c.sources);
    t.ok(error instanceof ConfigError, `${c.name}: is a ConfigError`);
    t.match(error, { name: 'ConfigError', message: c.message }, c.name);
  }
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
