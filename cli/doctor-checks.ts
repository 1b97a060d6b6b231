// The doctor's checks, each a function that answers one preflight question with one or more
// lines: ok, FAIL (with the fix), or skip (with why it could not be asked).
import type pg from 'pg';
import { queryOne, withClient } from './database.js';
import { probe } from './tcp-probe.js';

export type Outcome = 'ok' | 'FAIL' | 'skip';

export interface CheckLine {
  outcome: Outcome;
  text: string;
  fix?: string;
}

export function formatLine(line: CheckLine): string {
  const fix = line.fix === undefined ? '' : ` — fix: ${line.fix}`;
  return `${line.outcome.padEnd(4)} ${line.text}${fix}`;
}

const ok = (text: string): CheckLine => ({ outcome: 'ok', text });
const fail = (text: string, fix: string): CheckLine => ({ outcome: 'FAIL', text, fix });
const skip = (text: string): CheckLine => ({ outcome: 'skip', text });

export async function checkUpstream(host: string, port: number): Promise<CheckLine> {
  const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const result = await probe(host, port);
  if (result.reachable) return ok(`upstream reachable ${where}`);
  return fail(
    `upstream unreachable ${where} (${result.reason})`,
    'start PostgreSQL there, or set upstream_host and upstream_port',
  );
}

function sqlstateOf(error: unknown): string | undefined {
  // Node's own errors carry codes too (ECONNREFUSED); a SQLSTATE is five digits or capitals.
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** The installed version, or undefined (with a FAIL line) when pgvpd's SQL is not there. */
export async function checkInstalled(
  client: pg.Client,
  expected: string,
): Promise<{ line: CheckLine; installed: boolean }> {
  let version: string;
  try {
    ({ version } = await queryOne<{ version: string }>(
      client,
      'select pgvpd.version() as version',
    ));
  } catch (error) {
    // 3F000: no schema pgvpd; 42883: no pgvpd.version().
    const code = sqlstateOf(error);
    if (code === '3F000' || code === '42883') {
      return { line: fail('pgvpd SQL not installed', 'pgvpd setup'), installed: false };
    }
    throw error;
  }
  if (version !== expected) {
    return {
      line: fail(
        `pgvpd SQL is version ${version}, this pgvpd is ${expected}`,
        `run pgvpd setup from pgvpd ${expected}`,
      ),
      installed: true,
    };
  }
  return { line: ok(`pgvpd SQL installed, version ${version}`), installed: true };
}

interface AppRoleRow {
  role: string;
  ident: string;
  rolsuper: boolean;
  rolbypassrls: boolean;
  /** Roles it is a member of (directly or not) that are superuser or BYPASSRLS. */
  privileged: { role: string; ident: string; superuser: boolean }[];
  /** pgvpd_admin / pgvpd_proxy / pgvpd_api, when it is a member of them. */
  pgvpd: string[];
}

/**
 * Row level security does not apply to a superuser or a BYPASSRLS role, nor to a role that can
 * become one; an application role that is a member of pgvpd_admin or pgvpd_proxy could issue
 * itself any tenant's context, and one of pgvpd_api could act as the HTTP control plane. The
 * same rules as pgvpd.lint()'s app_role_* checks.
 */
export async function checkAppRoles(client: pg.Client): Promise<CheckLine[]> {
  const { rows } = await client.query<AppRoleRow>(`
    select a.rolname as role, quote_ident(a.rolname) as ident, a.rolsuper, a.rolbypassrls,
           coalesce((select json_agg(json_build_object('role', x.rolname, 'ident', quote_ident(x.rolname),
                                                       'superuser', x.rolsuper) order by x.rolname)
                       from pg_roles x
                      where x.oid <> a.oid and pg_has_role(a.oid, x.oid, 'MEMBER')
                        and (x.rolsuper or x.rolbypassrls)), '[]') as privileged,
           array(select x.rolname::text from pg_roles x
                  where x.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api') and pg_has_role(a.oid, x.oid, 'MEMBER')
                  order by 1) as pgvpd
      from pg_roles a
     where a.rolname in (select pgvpd.app_roles())
     order by a.rolname`);
  if (rows.length === 0) {
    return [
      fail(
        'no application role exists',
        "create a LOGIN NOSUPERUSER NOBYPASSRLS role, then select pgvpd.add_app_role('<role>')",
      ),
    ];
  }
  const lines: CheckLine[] = [];
  for (const r of rows) {
    const who = `application role ${r.role}`;
    if (r.rolsuper) lines.push(fail(`${who} is a superuser`, `ALTER ROLE ${r.ident} NOSUPERUSER`));
    if (r.rolbypassrls) {
      lines.push(fail(`${who} has BYPASSRLS`, `ALTER ROLE ${r.ident} NOBYPASSRLS`));
    }
    for (const group of r.privileged) {
      const what = group.superuser ? 'a superuser' : 'BYPASSRLS';
      lines.push(
        fail(
          `${who} is a member of ${group.role}, which is ${what}`,
          `REVOKE ${group.ident} FROM ${r.ident}`,
        ),
      );
    }
    for (const group of r.pgvpd) {
      lines.push(fail(`${who} is a member of ${group}`, `REVOKE ${group} FROM ${r.ident}`));
    }
  }
  if (lines.length > 0) return lines;
  return [ok(`application roles safe: ${rows.map((r) => r.role).join(', ')}`)];
}

const issueContext = 'pgvpd.issue_context(integer,text,text,jsonb)';

/** The proxy's control connection must be able to call pgvpd.issue_context, or no client gets a tenant. */
export async function checkControl(controlUrl: string | undefined): Promise<CheckLine> {
  if (controlUrl === undefined) {
    return skip('control role can issue context: no control_url configured');
  }
  let answer: { role: string; ident: string; allowed: boolean };
  try {
    answer = await withClient(controlUrl, (client) =>
      queryOne<{ role: string; ident: string; allowed: boolean }>(
        client,
        `select current_user as role, quote_ident(current_user) as ident,
                has_function_privilege(current_user, $1, 'execute') as allowed`,
        [issueContext],
      ),
    );
  } catch (error) {
    const code = sqlstateOf(error);
    const reason =
      code === undefined
        ? (error as Error).message
        : `${(error as Error).message} (SQLSTATE ${code})`;
    return fail(
      `control connection failed: ${reason}`,
      code === '42883' || code === '3F000'
        ? 'run pgvpd setup on the database control_url names'
        : 'check control_url',
    );
  }
  if (answer.allowed) return ok(`control role ${answer.role} can issue context`);
  return fail(
    `control role ${answer.role} cannot execute ${issueContext}`,
    `GRANT pgvpd_proxy TO ${answer.ident}`,
  );
}

/**
 * The HTTP control plane (admin_port) reaches the database as admin_control_url's login, or
 * control_url's: it must hold pgvpd_api's privileges (a member that inherits them), or every API
 * call fails with 42501. Skipped when no admin server is configured.
 */
export async function checkApiLogin(
  adminPort: number | undefined,
  adminControlUrl: string | undefined,
  controlUrl: string | undefined,
): Promise<CheckLine> {
  const what = 'API login is a member of pgvpd_api';
  if (adminPort === undefined) return skip(`${what}: no admin_port configured`);
  const setting = adminControlUrl === undefined ? 'control_url' : 'admin_control_url';
  const url = adminControlUrl ?? controlUrl;
  if (url === undefined) {
    return fail(
      'admin_port is set but neither admin_control_url nor control_url is: the HTTP control plane has no database login',
      'set admin_control_url to a login that is a member of pgvpd_api',
    );
  }
  let answer: { role: string; ident: string; exists: boolean; member: boolean; usage: boolean };
  try {
    answer = await withClient(url, (client) =>
      queryOne<{ role: string; ident: string; exists: boolean; member: boolean; usage: boolean }>(
        client,
        `select current_user as role, quote_ident(current_user) as ident, r.oid is not null as exists,
                coalesce(pg_has_role(current_user, r.oid, 'MEMBER'), false) as member,
                coalesce(pg_has_role(current_user, r.oid, 'USAGE'), false) as usage
           from (select 1) one
           left join pg_roles r on r.rolname = 'pgvpd_api'`,
      ),
    );
  } catch (error) {
    const code = sqlstateOf(error);
    const reason =
      code === undefined
        ? (error as Error).message
        : `${(error as Error).message} (SQLSTATE ${code})`;
    return fail(`API login (${setting}) connection failed: ${reason}`, `check ${setting}`);
  }
  if (!answer.exists) {
    return fail(
      'role pgvpd_api does not exist: the HTTP control plane cannot call pgvpd',
      `pgvpd setup on the database ${setting} names`,
    );
  }
  if (answer.usage) return ok(`API login ${answer.role} (${setting}) is a member of pgvpd_api`);
  if (answer.member) {
    return fail(
      `API login ${answer.role} (${setting}) is a member of pgvpd_api but does not inherit its privileges`,
      `ALTER ROLE ${answer.ident} INHERIT`,
    );
  }
  return fail(
    `API login ${answer.role} (${setting}) is not a member of pgvpd_api`,
    `GRANT pgvpd_api TO ${answer.ident}`,
  );
}

/** Only '/', letters, digits, '_', '.' and '-' are left unquoted in a shell command. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** Tables with a tenant-like column that pgvpd.status() does not call protected. */
export async function checkTables(client: pg.Client): Promise<CheckLine[]> {
  const { rows } = await client.query<{ table: string; column: string; verdict: string }>(
    `select format('%I.%I', schema_name, table_name) as table, tenant_column::text as column, verdict
       from pgvpd.status()
      where verdict in ('protected', 'unprotected', 'rls disabled')`,
  );
  const lines = rows
    .filter((row) => row.verdict !== 'protected')
    .map((row) => {
      const fix = `pgvpd protect ${shellWord(row.table)} ${shellWord(row.column)}`;
      return row.verdict === 'unprotected'
        ? fail(`table ${row.table} has tenant column ${row.column} and is not protected`, fix)
        : fail(`table ${row.table} has a pgvpd policy but row level security is disabled`, fix);
    });
  if (lines.length > 0) return lines;
  const protectedCount = rows.length;
  return [ok(`every table with a tenant column is protected (${protectedCount} protected)`)];
}

/**
 * Which context path the database uses (docs/guard.md), and whether it still matches what the
 * server has loaded: a module loaded or dropped since the last setup is a FAIL until setup runs.
 */
export async function checkContextPath(client: pg.Client): Promise<CheckLine> {
  const row = await queryOne<{ path: string; module_loaded: boolean; problem: string | null }>(
    client,
    'select path, module_loaded, problem from pgvpd.context_path()',
  );
  if (row.problem !== null) {
    return fail(
      `context path ${row.path} does not match the server: ${row.problem}`,
      row.module_loaded
        ? 'pgvpd setup, as a superuser'
        : 'add pgvpd_guard to shared_preload_libraries and restart, or run pgvpd setup',
    );
  }
  return ok(
    row.path === 'guard'
      ? 'context path: guard (pgvpd_guard loaded: verified once per session, kept in settings no client can set)'
      : 'context path: sql (pgvpd_guard not loaded: every statement verifies the context)',
  );
}

/**
 * Tenant confinement (docs/sql-core.md): the facilities that reach across sessions of one role
 * (activity, signals, large objects) closed to PUBLIC. A facility the operator opened with
 * pgvpd.unconfine is reported, not failed; one open although wanted closed is a FAIL.
 */
export async function checkConfinement(client: pg.Client): Promise<CheckLine> {
  const { rows } = await client.query<{ facility: string; wanted: boolean; state: string }>(
    'select facility, wanted, state from pgvpd.confinement()',
  );
  const broken = rows.filter((r) => r.wanted && r.state !== 'confined').map((r) => r.facility);
  if (broken.length > 0) {
    return fail(
      `tenant confinement open: ${broken.join(', ')} (tenants sharing a role reach each other)`,
      `select pgvpd.confine(), as a superuser`,
    );
  }
  const opened = rows.filter((r) => r.state !== 'confined').map((r) => r.facility);
  return ok(
    opened.length === 0
      ? `tenant confinement: ${rows.map((r) => r.facility).join(', ')} confined`
      : `tenant confinement: ${rows
          .filter((r) => r.state === 'confined')
          .map((r) => r.facility)
          .join(', ')} confined; ${opened.join(', ')} opened with pgvpd.unconfine`,
  );
}
