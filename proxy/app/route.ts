// App mode's route: the username names the upstream role and the tenant,
// `<role><tenant_separator><tenant>[<value_separator><value>…]`, e.g. `app_user.acme:alice`.
// Everything is validated here, before a byte goes upstream; the tenant and values never reach
// SQL except as bind parameters.
import { defaults, type ProxyConfig } from '../config.js';
import { proxyErrors } from '../errors.js';

export type AppRoute =
  | { kind: 'bypass'; role: string }
  | {
      kind: 'tenant';
      role: string;
      tenant: string;
      user: string | null;
      values: Record<string, string>;
    };

/** PostgreSQL truncates identifiers at NAMEDATALEN - 1 bytes; a longer role is refused, not cut. */
const maxRoleBytes = 63;

export type RouteConfig = Pick<
  ProxyConfig,
  | 'tenant_separator'
  | 'value_separator'
  | 'context_variables'
  | 'tenant_pattern'
  | 'value_pattern'
  | 'superuser_bypass'
> &
  Partial<Pick<ProxyConfig, 'role_pattern'>>;

export function compileRoute(config: RouteConfig): (username: string) => AppRoute {
  // Anchored as a whole, so that an alternation such as `acme|acme-eu` matches either in full.
  const tenantPattern = new RegExp(`^(?:${config.tenant_pattern})$`, 'u');
  const valuePattern = new RegExp(`^(?:${config.value_pattern})$`, 'u');
  const rolePatternText = config.role_pattern ?? defaults.role_pattern;
  const rolePattern = new RegExp(`^(?:${rolePatternText})$`, 'u');
  const bypass = new Set(config.superuser_bypass);
  const [, ...valueNames] = config.context_variables;
  const sep = config.tenant_separator;
  const vsep = config.value_separator;
  const shape = `<role>${sep}<tenant>${valueNames.map((name) => `[${vsep}<${name}>]`).join('')}`;
  const expected = `Connect as ${shape}, e.g. "app_user${sep}acme"; a tenant matches ${config.tenant_pattern}.`;

  return (username: string): AppRoute => {
    if (bypass.has(username)) return { kind: 'bypass', role: username };
    const refuse = (problem: string) => proxyErrors.badUsername(username, problem, expected);
    const at = username.indexOf(sep);
    if (at < 0) throw refuse(`no tenant (missing "${sep}")`);
    const role = username.slice(0, at);
    if (role === '') throw refuse('empty role');
    if (Buffer.byteLength(role) > maxRoleBytes)
      throw refuse(`role longer than ${String(maxRoleBytes)} bytes`);
    if (/\p{Cc}/u.test(role)) throw refuse('control character in role');
    if (!rolePattern.test(role)) throw refuse(`role does not match ${rolePatternText}`);
    const [tenant = '', ...values] = username.slice(at + sep.length).split(vsep);
    if (tenant === '') throw refuse('empty tenant');
    if (!tenantPattern.test(tenant)) throw refuse(`tenant does not match ${config.tenant_pattern}`);
    if (values.length > valueNames.length) {
      throw refuse(
        `${String(values.length)} context values given, ${String(valueNames.length)} configured`,
      );
    }
    const named: Record<string, string> = {};
    let user: string | null = null;
    values.forEach((value, index) => {
      const name = valueNames[index] ?? '';
      if (!valuePattern.test(value))
        throw refuse(`value for ${name} does not match ${config.value_pattern}`);
      if (name === 'user') user = value;
      else named[name] = value;
    });
    return { kind: 'tenant', role, tenant, user, values: named };
  };
}
