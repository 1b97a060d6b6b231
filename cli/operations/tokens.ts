// API tokens of the HTTP control plane (pgvpd.token_* functions, pgvpd_admin's). A token is
// returned once, when it is created: the catalog keeps only its SHA-256 hash, computed in SQL, so
// no operation can show it again. Scopes: operator (everything), org (one org's routes), metrics
// (GET /metrics). The first operator token comes from here (the CLI); docs/control-plane.md §1.
import type pg from 'pg';
import { OperationError, operation } from './errors.js';
import { getOrg, type OrgRow } from './orgs.js';

export const tokenScopes = ['operator', 'org', 'metrics'] as const;
export type TokenScope = (typeof tokenScopes)[number];

/** A row of pgvpd.tokens() with the org's database name; never a hash. */
export interface TokenRow {
  id: string;
  scope: TokenScope;
  org_id: string | null;
  /** The org's database name (null for operator and metrics tokens). */
  database_name: string | null;
  name: string | null;
  /** active, expired or revoked (the first that holds of revoked, expired). */
  state: 'active' | 'expired' | 'revoked';
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
}

export interface CreateTokenInput {
  scope: TokenScope;
  /** Required for scope org, refused for the others: the org's id or database name. */
  org?: string | undefined;
  /** What the token is for, for people reading the list (1 to 255 characters). */
  name?: string | undefined;
  /** Seconds until it expires, a whole number above 0; default: never. */
  ttlSeconds?: number | undefined;
}

export interface CreatedToken {
  id: string;
  /** The token itself, pgvpd_tok_…: shown this once, stored nowhere. */
  token: string;
  scope: TokenScope;
  org: OrgRow | null;
  name: string | null;
  expires_at: Date | null;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** invalid_input unless `ttl` is a whole number of seconds above 0 (or not given). */
export function checkTtlSeconds(ttl: number | undefined): void {
  if (ttl !== undefined && (!Number.isSafeInteger(ttl) || ttl <= 0)) {
    throw new OperationError(
      'invalid_input',
      `ttl must be a whole number of seconds above 0, got ${String(ttl)}`,
    );
  }
}

/** invalid_input unless `id` is a uuid, as every token and invite id is; `what`: 'a token'. */
export function checkId(id: string, what: string, listCommand: string): void {
  if (!uuidPattern.test(id)) {
    throw new OperationError(
      'invalid_input',
      `${JSON.stringify(id)} is not ${what} id: ids are uuids (${listCommand})`,
    );
  }
}

/** Creates a token (pgvpd.token_create) and returns it, the only time it can be read. */
export async function createToken(
  catalog: pg.ClientBase,
  input: CreateTokenInput,
): Promise<CreatedToken> {
  return operation(async () => {
    if (!(tokenScopes as readonly string[]).includes(input.scope)) {
      throw new OperationError(
        'invalid_input',
        `token scope must be operator, org or metrics, got ${JSON.stringify(input.scope)}`,
      );
    }
    if (input.scope === 'org' && input.org === undefined) {
      throw new OperationError('invalid_input', 'an org token needs an org');
    }
    if (input.scope !== 'org' && input.org !== undefined) {
      throw new OperationError(
        'invalid_input',
        `${input.scope === 'operator' ? 'an' : 'a'} ${input.scope} token is bound to no org: leave out the org`,
      );
    }
    checkTtlSeconds(input.ttlSeconds);
    const org = input.org === undefined ? null : await getOrg(catalog, input.org);
    const { rows } = await catalog.query<{ id: string; token: string; expires_at: Date | null }>(
      `select t.id, t.token, t.expires_at
         from pgvpd.token_create($1, $2, $3, $4::bigint * interval '1 second') t`,
      [input.scope, org?.id ?? null, input.name ?? null, input.ttlSeconds ?? null],
    );
    const [created] = rows;
    if (created === undefined) throw new Error('pgvpd.token_create returned no row');
    return { ...created, scope: input.scope, org, name: input.name ?? null };
  });
}

/** Every token (or an org's: its id or database name), oldest first; never a hash. */
export async function listTokens(
  catalog: pg.ClientBase,
  options: { org?: string | undefined } = {},
): Promise<TokenRow[]> {
  return operation(async () => {
    const org = options.org === undefined ? null : await getOrg(catalog, options.org);
    const { rows } = await catalog.query<TokenRow>(
      `select t.id, t.scope, t.org_id, o.database_name, t.name,
              case when t.revoked_at is not null then 'revoked'
                   when t.expires_at <= clock_timestamp() then 'expired'
                   else 'active' end as state,
              t.created_at, t.expires_at, t.revoked_at, t.last_used_at
         from pgvpd.tokens($1) t
         left join pgvpd.orgs() o on o.id = t.org_id
        order by t.created_at, t.id`,
      [org?.id ?? null],
    );
    return rows;
  });
}

/**
 * Revokes a token (pgvpd.token_revoke): the very next request with it is refused. revoked is
 * false when it was revoked already; not_found (42704) for an unknown id.
 */
export async function revokeToken(
  catalog: pg.ClientBase,
  id: string,
): Promise<{ id: string; revoked: boolean }> {
  return operation(async () => {
    checkId(id, 'a token', 'pgvpd token list');
    const { rows } = await catalog.query<{ revoked: boolean }>(
      'select pgvpd.token_revoke($1) as revoked',
      [id],
    );
    return { id: id.toLowerCase(), revoked: rows[0]?.revoked === true };
  });
}
