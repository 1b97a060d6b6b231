// Invites (pgvpd.invite_* functions, pgvpd_admin's): a person invited as a user of an org opens
// the setup link, chooses a PostgreSQL password on the /setup page, and the browser sends only
// the SCRAM verifier of it; redeeming the invite adds the user. An invite is returned once, when
// it is created: the catalog keeps only its SHA-256 hash. It lives 24 hours unless told otherwise
// (at most 7 days); a new invite for the same username revokes the open one. The setup link
// carries the invite in its fragment (#invite=…), which a browser never sends to a server.
import type pg from 'pg';
import { operation } from './errors.js';
import { getOrg, type OrgRow } from './orgs.js';
import { checkId, checkTtlSeconds } from './tokens.js';

export { setupUrl } from '../../proxy/admin/connect-info.js';

export type InviteState = 'open' | 'consumed' | 'expired' | 'revoked';

/** A row of pgvpd.invites(); never the invite or its hash. */
export interface InviteRow {
  id: string;
  username: string;
  connect_as: string;
  state: InviteState;
  created_at: Date;
  expires_at: Date;
}

export interface CreateInviteInput {
  /** The org: its id or its database name. */
  org: string;
  /** The username the invited person gets (not yet a user of the org). */
  username: string;
  /** The role the proxy logs in as upstream for that user (check_connect_as applies). */
  connectAs: string;
  /** Seconds until it expires: above 0, at most 604800 (7 days); default 86400 (24 hours). */
  ttlSeconds?: number | undefined;
}

export interface CreatedInvite {
  id: string;
  /** The invite itself, pgvpd_inv_…: shown this once, stored nowhere. */
  invite: string;
  org: OrgRow;
  username: string;
  connect_as: string;
  expires_at: Date;
}

/** Creates an invite (pgvpd.invite_create) and returns it, the only time it can be read. */
export async function createInvite(
  catalog: pg.ClientBase,
  input: CreateInviteInput,
): Promise<CreatedInvite> {
  return operation(async () => {
    checkTtlSeconds(input.ttlSeconds);
    const org = await getOrg(catalog, input.org);
    const { rows } = await catalog.query<{ id: string; invite: string; expires_at: Date }>(
      `select i.id, i.invite, i.expires_at
         from pgvpd.invite_create($1, $2, $3, coalesce($4::bigint * interval '1 second', interval '24 hours')) i`,
      [org.id, input.username, input.connectAs, input.ttlSeconds ?? null],
    );
    const [created] = rows;
    if (created === undefined) throw new Error('pgvpd.invite_create returned no row');
    return { ...created, org, username: input.username, connect_as: input.connectAs };
  });
}

/** An org's invites, oldest first, with their state. */
export async function listInvites(
  catalog: pg.ClientBase,
  orgRef: string,
): Promise<{ org: OrgRow; invites: InviteRow[] }> {
  return operation(async () => {
    const org = await getOrg(catalog, orgRef);
    const { rows } = await catalog.query<InviteRow>('select * from pgvpd.invites($1)', [org.id]);
    return { org, invites: rows };
  });
}

/**
 * Revokes an invite (pgvpd.invite_revoke): its link stops working. revoked is false when it was
 * consumed or revoked already; not_found (42704) when the org has no invite with that id.
 */
export async function revokeInvite(
  catalog: pg.ClientBase,
  input: { org: string; id: string },
): Promise<{ org: OrgRow; id: string; revoked: boolean }> {
  return operation(async () => {
    const org = await getOrg(catalog, input.org);
    checkId(input.id, 'an invite', `pgvpd invite list ${org.database_name}`);
    const { rows } = await catalog.query<{ revoked: boolean }>(
      'select pgvpd.invite_revoke($1, $2) as revoked',
      [org.id, input.id],
    );
    return { org, id: input.id.toLowerCase(), revoked: rows[0]?.revoked === true };
  });
}
