// App mode's username grammar, `<role><sep><tenant>[<vsep><value>…]`: what is accepted, what each
// accepted name routes to, and that every refusal is a 28000 naming the problem with a hint.
import t from 'tap';
import { defaults } from '../../proxy/config.js';
import { ProxyError } from '../../proxy/errors.js';
import { compileRoute, type AppRoute, type RouteConfig } from '../../proxy/app/route.js';

const withValues: RouteConfig = {
  ...defaults,
  context_variables: ['tenant_id', 'user', 'role'],
  superuser_bypass: ['postgres'],
};
const route = compileRoute(withValues);

const defaultTenantPattern = '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$';
const defaultValuePattern = '^[A-Za-z0-9@._+-]{1,255}$';
const expectedHint = `Connect as <role>.<tenant>[:<user>][:<role>], e.g. "app_user.acme"; a tenant matches ${defaultTenantPattern}.`;

const tenant = (
  role: string,
  tenantId: string,
  user: string | null = null,
  values: Record<string, string> = {},
): AppRoute => ({ kind: 'tenant', role, tenant: tenantId, user, values });

t.test('accepted usernames route to their role, tenant and values', (t) => {
  const cases: { name: string; username: string; expected: AppRoute }[] = [
    {
      name: 'a role and a tenant',
      username: 'app_user.acme',
      expected: tenant('app_user', 'acme'),
    },
    {
      name: 'a tenant and the user value',
      username: 'app_user.acme:alice',
      expected: tenant('app_user', 'acme', 'alice'),
    },
    {
      name: 'a tenant, the user and a named value',
      username: 'app_user.acme:alice:admin',
      expected: tenant('app_user', 'acme', 'alice', { role: 'admin' }),
    },
    {
      name: 'a value holding the tenant separator and an at sign',
      username: 'app_user.acme:alice@example.com:admin',
      expected: tenant('app_user', 'acme', 'alice@example.com', { role: 'admin' }),
    },
    {
      name: 'a tenant of 63 characters, the most the pattern allows',
      username: `app_user.${'t'.repeat(63)}`,
      expected: tenant('app_user', 't'.repeat(63)),
    },
    {
      name: 'a bypass name with a tenant suffix, which is an ordinary tenant route',
      username: 'postgres.acme',
      expected: tenant('postgres', 'acme'),
    },
    {
      name: 'the bypass name itself',
      username: 'postgres',
      expected: { kind: 'bypass', role: 'postgres' },
    },
  ];
  for (const c of cases)
    t.same(
      outcome(() => route(c.username)),
      c.expected,
      c.name,
    );
  t.end();
});

t.test('custom separators and patterns change the grammar', (t) => {
  const cases: {
    name: string;
    config: Partial<RouteConfig>;
    username: string;
    expected: AppRoute;
  }[] = [
    {
      name: 'an at sign and a slash',
      config: { tenant_separator: '@', value_separator: '/' },
      username: 'app_user@acme/alice/admin',
      expected: tenant('app_user', 'acme', 'alice', { role: 'admin' }),
    },
    {
      name: 'a separator of two characters',
      config: { tenant_separator: '__', value_separator: '--' },
      username: 'app_user__acme--alice',
      expected: tenant('app_user', 'acme', 'alice'),
    },
    {
      name: 'a role of exactly 63 bytes in multibyte characters, when role_pattern allows them',
      config: { role_pattern: '\\p{L}+' },
      username: `${'é'.repeat(31)}a.acme`,
      expected: tenant(`${'é'.repeat(31)}a`, 'acme'),
    },
    {
      name: 'a dotted role once the tenant separator is another character',
      config: { tenant_separator: '#' },
      username: 'app.user#acme',
      expected: tenant('app.user', 'acme'),
    },
    {
      name: 'a second bypass name',
      config: { superuser_bypass: ['postgres', 'migrator'] },
      username: 'migrator',
      expected: { kind: 'bypass', role: 'migrator' },
    },
    {
      name: 'an unanchored pattern whose second alternative matches the whole tenant',
      config: { tenant_pattern: 'acme|acme-eu' },
      username: 'app_user.acme-eu',
      expected: tenant('app_user', 'acme-eu'),
    },
  ];
  for (const c of cases) {
    const routeWith = compileRoute({ ...withValues, ...c.config });
    t.same(
      outcome(() => routeWith(c.username)),
      c.expected,
      c.name,
    );
  }
  t.end();
});

t.test('refused usernames are 28000 errors naming the problem', (t) => {
  const cases: { name: string; username: string; problem: string }[] = [
    {
      name: 'a single quote in the role',
      username: "app_user'.acme",
      problem: 'role does not match ^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
    },
    {
      name: 'a space and a semicolon in the role',
      username: 'app_user; drop.acme',
      problem: 'role does not match ^[A-Za-z_][A-Za-z0-9_.$-]{0,62}$',
    },
    {
      name: 'a single quote in the tenant',
      username: "app_user.ac'me",
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a double quote in the tenant',
      username: 'app_user.acme"',
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a semicolon and SQL in the tenant',
      username: 'app_user.acme;drop table notes',
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a space in the tenant',
      username: 'app_user.ac me',
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a non-ASCII letter in the tenant',
      username: 'app_user.acmé',
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'an emoji as the tenant',
      username: 'app_user.\u{1F600}',
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a tenant that starts with a hyphen',
      username: 'app_user.-acme',
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a tenant of 64 characters',
      username: `app_user.${'t'.repeat(64)}`,
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'a username of 1,000 characters',
      username: `app_user.${'t'.repeat(991)}`,
      problem: `tenant does not match ${defaultTenantPattern}`,
    },
    {
      name: 'an empty tenant',
      username: 'app_user.',
      problem: 'empty tenant',
    },
    {
      name: 'an empty tenant before values',
      username: 'app_user.:alice',
      problem: 'empty tenant',
    },
    {
      name: 'no tenant separator',
      username: 'app_user',
      problem: 'no tenant (missing ".")',
    },
    {
      name: 'a bypass name with a trailing space',
      username: 'postgres ',
      problem: 'no tenant (missing ".")',
    },
    {
      name: 'an empty username',
      username: '',
      problem: 'no tenant (missing ".")',
    },
    {
      name: 'an empty role',
      username: '.acme',
      problem: 'empty role',
    },
    {
      name: 'a role of 64 ASCII bytes',
      username: `${'r'.repeat(64)}.acme`,
      problem: 'role longer than 63 bytes',
    },
    {
      name: 'a role of 32 characters that is 64 bytes in UTF-8',
      username: `${'é'.repeat(32)}.acme`,
      problem: 'role longer than 63 bytes',
    },
    {
      name: 'a role of 1,000 characters',
      username: `${'r'.repeat(995)}.acme`,
      problem: 'role longer than 63 bytes',
    },
    {
      name: 'a control character in the role',
      username: 'app\nuser.acme',
      problem: 'control character in role',
    },
    {
      name: 'more values than configured',
      username: 'app_user.acme:alice:admin:extra',
      problem: '3 context values given, 2 configured',
    },
    {
      name: 'a space in the user value',
      username: 'app_user.acme:al ice',
      problem: `value for user does not match ${defaultValuePattern}`,
    },
    {
      name: 'a quote in the user value',
      username: "app_user.acme:o'brien",
      problem: `value for user does not match ${defaultValuePattern}`,
    },
    {
      name: 'an empty user value',
      username: 'app_user.acme:',
      problem: `value for user does not match ${defaultValuePattern}`,
    },
    {
      name: 'a semicolon in the second value',
      username: 'app_user.acme:alice:admin;drop',
      problem: `value for role does not match ${defaultValuePattern}`,
    },
    {
      name: 'a value of 256 characters',
      username: `app_user.acme:${'v'.repeat(256)}`,
      problem: `value for user does not match ${defaultValuePattern}`,
    },
  ];
  for (const c of cases) {
    t.test(c.name, (t) => {
      const error = catchError(() => route(c.username));
      t.ok(error instanceof ProxyError, 'is a ProxyError');
      t.match(error, {
        kind: 'bad_username',
        code: '28000',
        message: `invalid pgvpd username ${JSON.stringify(c.username)}: ${c.problem}`,
        hint: expectedHint,
      });
      t.end();
    });
  }
  t.end();
});

t.test('the hint shows the configured separators and value names', (t) => {
  const cases: { name: string; config: Partial<RouteConfig>; username: string; hint: string }[] = [
    {
      name: 'the defaults: tenant only',
      config: { context_variables: ['tenant_id'] },
      username: 'app_user',
      hint: `Connect as <role>.<tenant>, e.g. "app_user.acme"; a tenant matches ${defaultTenantPattern}.`,
    },
    {
      name: 'an at sign, a slash and two values',
      config: { tenant_separator: '@', value_separator: '/', tenant_pattern: '^[a-z]+$' },
      username: 'app_user',
      hint: 'Connect as <role>@<tenant>[/<user>][/<role>], e.g. "app_user@acme"; a tenant matches ^[a-z]+$.',
    },
  ];
  for (const c of cases) {
    const error = catchError(() => compileRoute({ ...withValues, ...c.config })(c.username));
    t.match(error, { code: '28000', hint: c.hint }, c.name);
  }
  t.end();
});

t.test('with no value names configured, any value is one too many', (t) => {
  const tenantOnly = compileRoute({ ...defaults, context_variables: ['tenant_id'] });
  t.match(
    catchError(() => tenantOnly('app_user.acme:alice')),
    {
      code: '28000',
      message: 'invalid pgvpd username "app_user.acme:alice": 1 context values given, 0 configured',
    },
  );
  t.end();
});

t.test('a tenant must match the whole pattern, not a prefix of it', (t) => {
  const loose = compileRoute({ ...withValues, tenant_pattern: '[a-z]+' });
  t.same(loose('app_user.acme'), tenant('app_user', 'acme'), 'a full match is accepted');
  t.match(
    catchError(() => loose('app_user.acme1')),
    {
      code: '28000',
      message: 'invalid pgvpd username "app_user.acme1": tenant does not match [a-z]+',
    },
    'a prefix match is refused',
  );
  t.end();
});

/** What `fn` returns, or what it throws: a refusal then shows up in the diff, not as a crash. */
function outcome(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (error) {
    return error;
  }
}

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error('expected a throw');
}
