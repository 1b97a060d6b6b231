// An org's users (pgvpd.user_* functions). The proxy authenticates them itself with
// SCRAM-SHA-256, so the catalog keeps a verifier, never a password: these operations take the
// verifier (proxy/auth/scram-verifier.ts makeVerifier computes it from a password), never a
// password, and never return one.
import type pg from 'pg';
import { OperationError, operation } from './errors.js';
import { getOrg, usersOf, type OrgRow, type OrgUserRow } from './orgs.js';

export interface OrgUsers {
  org: OrgRow;
  users: OrgUserRow[];
}

export interface OrgUser {
  org: OrgRow;
  user: OrgUserRow;
}

export interface AddUserInput {
  /** The org: its id or its database name. */
  org: string;
  /** Unique within the org. */
  username: string;
  /** SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as makeVerifier returns it. */
  verifier: string;
  /** The role the proxy logs in as upstream: LOGIN, neither superuser nor BYPASSRLS. */
  connectAs: string;
}

export interface SetUserVerifierInput {
  org: string;
  username: string;
  verifier: string;
}

/** An org's users, by username. */
export async function listUsers(catalog: pg.ClientBase, orgRef: string): Promise<OrgUsers> {
  return operation(async () => {
    const org = await getOrg(catalog, orgRef);
    return { org, users: await usersOf(catalog, org) };
  });
}

/** One user of an org; not_found (no SQLSTATE) when the org has no such user. */
export async function getUser(
  catalog: pg.ClientBase,
  orgRef: string,
  username: string,
): Promise<OrgUser> {
  return operation(async () => {
    const org = await getOrg(catalog, orgRef);
    const { rows } = await catalog.query<OrgUserRow>(
      'select * from pgvpd.org_users($1) u where u.username = $2',
      [org.id, username],
    );
    const [user] = rows;
    if (user === undefined) {
      throw new OperationError(
        'not_found',
        `no user ${JSON.stringify(username)} in org ${org.database_name} (pgvpd user list --org ${org.database_name})`,
      );
    }
    return { org, user };
  });
}

/** Adds a user to an org (pgvpd.user_add) and returns it. */
export async function addUser(catalog: pg.ClientBase, input: AddUserInput): Promise<OrgUser> {
  return operation(async () => {
    const org = await getOrg(catalog, input.org);
    await catalog.query('select pgvpd.user_add($1, $2, $3, $4)', [
      org.id,
      input.username,
      input.verifier,
      input.connectAs,
    ]);
    return getUser(catalog, org.id, input.username);
  });
}

/** Replaces a user's verifier (pgvpd.user_set_verifier): a new password. */
export async function setUserVerifier(
  catalog: pg.ClientBase,
  input: SetUserVerifierInput,
): Promise<{ org: OrgRow; username: string }> {
  return operation(async () => {
    const org = await getOrg(catalog, input.org);
    await catalog.query('select pgvpd.user_set_verifier($1, $2, $3)', [
      org.id,
      input.username,
      input.verifier,
    ]);
    return { org, username: input.username };
  });
}

/**
 * Removes a user from an org (pgvpd.user_remove). Its connect_as role is left alone, except that
 * pgvpd revokes what it granted the role once no user connects as it.
 */
export async function removeUser(
  catalog: pg.ClientBase,
  input: { org: string; username: string },
): Promise<{ org: OrgRow; username: string }> {
  return operation(async () => {
    const org = await getOrg(catalog, input.org);
    await catalog.query('select pgvpd.user_remove($1, $2)', [org.id, input.username]);
    return { org, username: input.username };
  });
}
