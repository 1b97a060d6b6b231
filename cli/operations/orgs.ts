// The orgs of org mode, kept in the catalog (pgvpd.org_* functions, pgvpd_admin's). The SQL
// validates and records; these operations add what a function cannot do: CREATE DATABASE for a
// dedicated org with pgvpd's SQL in it, and DROP DATABASE when such an org is purged. An org is
// named by a reference: its id, or its database name (what people type).
import type pg from 'pg';
import { queryOne } from './connection.js';
import {
  adminUrlFor,
  createDatabase,
  dropDatabase,
  installPgvpd,
  setupSql,
  type ServerAccess,
} from './databases.js';
import { OperationError, operation, toOperationError } from './errors.js';

/** A row of pgvpd.orgs(). */
export interface OrgRow {
  id: string;
  database_name: string;
  display_name: string | null;
  status: string;
  placement: string;
  server_name: string;
  target_database: string;
  user_count: number;
  created_at: Date;
}

/** A row of pgvpd.org_users() (never a verifier). */
export interface OrgUserRow {
  username: string;
  connect_as: string;
  created_at: Date;
}

export type Placement = 'shared' | 'dedicated';

/** The pgvpd.orgs() row with the org's users. */
export type OrgDetails = OrgRow & { users: OrgUserRow[] };

/**
 * The org a reference names: its id (any case), or its database name. An org's database name
 * defaults to its id, and an id match wins should the two ever name different orgs. not_found
 * (no SQLSTATE) when there is none.
 */
export async function getOrg(catalog: pg.ClientBase, ref: string): Promise<OrgRow> {
  return operation(async () => {
    const { rows } = await catalog.query<OrgRow>(
      `select o.* from pgvpd.orgs() o
        where o.id::text = lower($1) or o.database_name = $1
        order by o.id::text = lower($1) desc
        limit 1`,
      [ref],
    );
    const [org] = rows;
    if (org === undefined) {
      throw new OperationError(
        'not_found',
        `no org ${JSON.stringify(ref)}: name an org by its id or its database name (pgvpd org list)`,
      );
    }
    return org;
  });
}

/** Every org, by database name. */
export async function listOrgs(catalog: pg.ClientBase): Promise<OrgRow[]> {
  return operation(async () => {
    const { rows } = await catalog.query<OrgRow>('select * from pgvpd.orgs()');
    return rows;
  });
}

/** The users of an org already found (pgvpd.org_users), by username. */
export async function usersOf(catalog: pg.ClientBase, org: OrgRow): Promise<OrgUserRow[]> {
  return operation(async () => {
    const { rows } = await catalog.query<OrgUserRow>('select * from pgvpd.org_users($1)', [org.id]);
    return rows;
  });
}

/** One org and its users. */
export async function showOrg(catalog: pg.ClientBase, ref: string): Promise<OrgDetails> {
  return operation(async () => {
    const org = await getOrg(catalog, ref);
    return { ...org, users: await usersOf(catalog, org) };
  });
}

/** Whether org create would accept this database name now (not invalid, reserved or taken). */
export async function isOrgNameAvailable(catalog: pg.ClientBase, name: string): Promise<boolean> {
  return operation(async () => {
    const { available } = await queryOne<{ available: boolean }>(
      catalog,
      'select pgvpd.org_name_available($1) as available',
      [name],
    );
    return available;
  });
}

export interface CreateOrgInput extends ServerAccess {
  /** The name people read, e.g. "Acme Inc". */
  displayName: string;
  /** What clients put in their connection string; default: the org id. */
  databaseName?: string | undefined;
  /** Default shared. */
  placement?: Placement | undefined;
  /** The server its database is on; default `default`. */
  server?: string | undefined;
  /** Default: shared, the catalog's database; dedicated, the database name. */
  targetDatabase?: string | undefined;
  /** Dedicated only: the template of the new database; default template0. */
  template?: string | undefined;
}

export interface CreatedOrg {
  org: OrgRow;
  /** Dedicated placement: the database created (with pgvpd installed) for the org. */
  createdDatabase: { name: string; server: string } | null;
  warnings: string[];
}

async function orgCreate(catalog: pg.ClientBase, input: CreateOrgInput): Promise<string> {
  const { id } = await queryOne<{ id: string }>(
    catalog,
    'select pgvpd.org_create($1, $2, $3, $4, $5) as id',
    [
      input.displayName,
      input.databaseName ?? null,
      input.placement ?? 'shared',
      input.server ?? 'default',
      input.targetDatabase ?? null,
    ],
  );
  return id;
}

/**
 * A dedicated org: the catalog row is written in a transaction that commits only once its
 * database exists with pgvpd installed, so the catalog never names a database that is not there.
 * org_create runs first and checks everything it can (name, server, database not in use) before
 * anything is created; a database created here is dropped again when a later step fails.
 */
async function createDedicated(
  catalog: pg.ClientBase,
  input: CreateOrgInput,
): Promise<Omit<CreatedOrg, 'org'> & { id: string }> {
  const warnings: string[] = [];
  await catalog.query('begin');
  try {
    const id = await orgCreate(catalog, input);
    const org = await queryOne<{ target_database: string; server_name: string }>(
      catalog,
      'select o.target_database, o.server_name from pgvpd.orgs() o where o.id = $1',
      [id],
    );
    const admin = await adminUrlFor(catalog, org.server_name, input);
    warnings.push(...admin.warnings);
    const sql = setupSql();
    await createDatabase(admin.url, org.target_database, input.template ?? 'template0');
    try {
      await installPgvpd(admin.url, org.target_database, sql);
      await catalog.query('commit');
    } catch (error) {
      await dropDatabase(admin.url, org.target_database).catch((dropError: unknown) => {
        const reason = dropError instanceof Error ? dropError.message : String(dropError);
        warnings.push(
          `could not drop database ${org.target_database}, which this command created (${reason}): drop it yourself`,
        );
      });
      throw error;
    }
    return {
      id,
      createdDatabase: { name: org.target_database, server: org.server_name },
      warnings,
    };
  } catch (error) {
    await catalog.query('rollback').catch(() => undefined);
    throw toOperationError(error).withWarnings(warnings);
  }
}

/**
 * Adds an org (pgvpd.org_create). Shared placement: its rows live, under row level security, in
 * targetDatabase. Dedicated: creates its database on its server (see ServerAccess), installs
 * pgvpd in it, then records the org. template and serverDb are refused for shared placement.
 */
export async function createOrg(
  catalog: pg.ClientBase,
  input: CreateOrgInput,
): Promise<CreatedOrg> {
  return operation(async () => {
    if ((input.placement ?? 'shared') === 'shared') {
      for (const [field, value] of [
        ['template', input.template],
        ['serverDb', input.serverDb],
      ] as const) {
        if (value !== undefined) {
          throw new OperationError(
            'invalid_input',
            `${field} is for dedicated placement: a shared org's database exists already`,
          );
        }
      }
      const id = await orgCreate(catalog, input);
      return { org: await getOrg(catalog, id), createdDatabase: null, warnings: [] };
    }
    const { id, createdDatabase, warnings } = await createDedicated(catalog, input);
    return { org: await getOrg(catalog, id), createdDatabase, warnings };
  });
}

export interface OrgStatusChange {
  /** The org as it is now. */
  org: OrgRow;
  /** False when it had that status already. */
  changed: boolean;
}

async function setStatus(
  catalog: pg.ClientBase,
  ref: string,
  fn: 'org_suspend' | 'org_resume',
  status: string,
): Promise<OrgStatusChange> {
  return operation(async () => {
    const org = await getOrg(catalog, ref);
    const { changed } = await queryOne<{ changed: boolean }>(
      catalog,
      `select pgvpd.${fn}($1) as changed`,
      [org.id],
    );
    return { org: { ...org, status }, changed };
  });
}

/** How the proxy pools an org's sessions; null: the proxy's own pool_mode setting. */
export type PoolMode = 'session' | 'transaction' | null;

export interface OrgPoolModeChange {
  org: OrgRow;
  /** The mode the org has now. */
  mode: PoolMode;
}

/**
 * Sets the org's pool mode (pgvpd.org_set_pool_mode); null resets it to the proxy's setting.
 * The catalog notifies the proxies, which apply it to the org's next sessions.
 */
export async function setOrgPoolMode(
  catalog: pg.ClientBase,
  ref: string,
  mode: PoolMode,
): Promise<OrgPoolModeChange> {
  return operation(async () => {
    const org = await getOrg(catalog, ref);
    await catalog.query('select pgvpd.org_set_pool_mode($1, $2)', [org.id, mode]);
    return { org, mode };
  });
}

/** The proxy refuses the org's new sessions (its data and users stay). */
export async function suspendOrg(catalog: pg.ClientBase, ref: string): Promise<OrgStatusChange> {
  return setStatus(catalog, ref, 'org_suspend', 'suspended');
}

/** The proxy accepts the org's sessions again. */
export async function resumeOrg(catalog: pg.ClientBase, ref: string): Promise<OrgStatusChange> {
  return setStatus(catalog, ref, 'org_resume', 'active');
}

/**
 * Removes the org and its users from the catalog (pgvpd.org_remove); its rows, its database and
 * the connect_as roles are left alone. Returns the org as it was.
 */
export async function removeOrg(catalog: pg.ClientBase, ref: string): Promise<OrgRow> {
  return operation(async () => {
    const org = await getOrg(catalog, ref);
    await catalog.query('select pgvpd.org_remove($1)', [org.id]);
    return org;
  });
}

export interface PurgeOrgInput extends ServerAccess {
  /** The org: its id or its database name. */
  org: string;
}

export interface OrgPurgePlan {
  org: OrgRow;
  /** The catalog's database, whose protected tables lose the org's rows. */
  catalogDatabase: string;
  /** Dedicated placement: the database that is dropped afterwards. */
  dropsDatabase: { name: string; server: string } | null;
  warnings: string[];
}

export interface OrgPurgeResult extends OrgPurgePlan {
  /** Per protected table (schema-qualified), the rows deleted, in the order deleted. */
  deleted: { table: string; rows: number }[];
  /**
   * Dedicated placement: whether the database was dropped (false: it did not exist). error: the
   * org is purged from the catalog, but its database could not be dropped.
   */
  database: { name: string; server: string; dropped: boolean; error?: OperationError } | null;
}

async function plan(
  catalog: pg.ClientBase,
  input: PurgeOrgInput,
): Promise<OrgPurgePlan & { adminUrl?: string }> {
  const org = await getOrg(catalog, input.org);
  const { here } = await queryOne<{ here: string }>(catalog, 'select current_database() as here');
  const name = org.database_name;
  if (
    org.placement === 'shared' &&
    (org.server_name !== 'default' || org.target_database !== here)
  ) {
    throw new OperationError(
      'not_purgeable',
      `org ${name}'s rows live in database ${org.target_database} on server ${org.server_name}, not in the catalog's database ${here}: pgvpd cannot purge them from here. Delete them there, then run pgvpd org remove ${name}`,
    );
  }
  if (org.placement !== 'dedicated') {
    return { org, catalogDatabase: here, dropsDatabase: null, warnings: [] };
  }
  const admin = await adminUrlFor(catalog, org.server_name, input);
  return {
    org,
    catalogDatabase: here,
    dropsDatabase: { name: org.target_database, server: org.server_name },
    warnings: admin.warnings,
    adminUrl: admin.url,
  };
}

/**
 * What purgeOrg would do, checked without changing anything: the org exists, its rows are in the
 * catalog's database (not_purgeable otherwise), and for a dedicated org its server can be reached
 * as a superuser (server_db_required otherwise). For a caller that asks for confirmation first.
 */
export async function planOrgPurge(
  catalog: pg.ClientBase,
  input: PurgeOrgInput,
): Promise<OrgPurgePlan> {
  return operation(async () => {
    const { org, catalogDatabase, dropsDatabase, warnings } = await plan(catalog, input);
    return { org, catalogDatabase, dropsDatabase, warnings };
  });
}

/**
 * Deletes an org's data for good: its rows in every table pgvpd protects in the catalog's
 * database and its catalog entry and users (pgvpd.org_purge_rows), then for a dedicated org its
 * database. confirmation must be the org's database name (invalid_input otherwise, nothing done).
 */
export async function purgeOrg(
  catalog: pg.ClientBase,
  input: PurgeOrgInput & { confirmation: string },
): Promise<OrgPurgeResult> {
  return operation(async () => {
    const { adminUrl, ...planned } = await plan(catalog, input);
    const { org } = planned;
    if (input.confirmation !== org.database_name) {
      throw new OperationError(
        'invalid_input',
        `confirmation ${JSON.stringify(input.confirmation)} is not the database name of org ${org.id}: nothing was purged`,
      );
    }
    const { rows } = await catalog.query<{ table_name: string; rows_deleted: string }>(
      // Schema-qualified always: regclass::text drops the schema of tables on search_path.
      `select format('%I.%I', n.nspname, c.relname) as table_name, p.rows_deleted
         from pgvpd.org_purge_rows($1, $2) with ordinality p
         join pg_catalog.pg_class c on c.oid = p.table_name
         join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        order by p.ordinality`,
      [org.id, input.confirmation],
    );
    const deleted = rows.map((row) => ({ table: row.table_name, rows: Number(row.rows_deleted) }));
    if (adminUrl === undefined || planned.dropsDatabase === null) {
      return { ...planned, deleted, database: null };
    }
    const { name, server } = planned.dropsDatabase;
    try {
      const dropped = await dropDatabase(adminUrl, name);
      return { ...planned, deleted, database: { name, server, dropped } };
    } catch (error) {
      return {
        ...planned,
        deleted,
        database: { name, server, dropped: false, error: toOperationError(error) },
      };
    }
  });
}

// ---- The roles an org's org-scoped API tokens may choose as connect_as ---------------------------
// (pgvpd.org_allow_role / org_disallow_role / org_allowed_roles). An operator token and the CLI may
// use any role that passes check_connect_as; an org token only these, so that an org's own admin
// tooling cannot point its users at another org's role.

export interface OrgRoleChange {
  org: OrgRow;
  role: string;
  /** False when the role was allowed (allow) or not allowed (disallow) already. */
  changed: boolean;
  /** The org's allowed roles afterwards, by name. */
  allowed: string[];
}

async function allowedRolesOf(catalog: pg.ClientBase, org: OrgRow): Promise<string[]> {
  const { rows } = await catalog.query<{ role: string }>(
    'select r as role from pgvpd.org_allowed_roles($1) r',
    [org.id],
  );
  return rows.map((row) => row.role);
}

/** The roles an org's org tokens may choose as connect_as, by name. */
export async function allowedOrgRoles(
  catalog: pg.ClientBase,
  ref: string,
): Promise<{ org: OrgRow; allowed: string[] }> {
  return operation(async () => {
    const org = await getOrg(catalog, ref);
    return { org, allowed: await allowedRolesOf(catalog, org) };
  });
}

async function changeRole(
  catalog: pg.ClientBase,
  ref: string,
  role: string,
  fn: 'org_allow_role' | 'org_disallow_role',
): Promise<OrgRoleChange> {
  return operation(async () => {
    const org = await getOrg(catalog, ref);
    const { changed } = await queryOne<{ changed: boolean }>(
      catalog,
      `select pgvpd.${fn}($1, $2) as changed`,
      [org.id, role],
    );
    return { org, role, changed, allowed: await allowedRolesOf(catalog, org) };
  });
}

/**
 * Lets the org's org tokens choose `role` as connect_as. The role must pass check_connect_as
 * (exists, LOGIN, neither superuser nor BYPASSRLS: its SQLSTATEs otherwise).
 */
export async function allowOrgRole(
  catalog: pg.ClientBase,
  ref: string,
  role: string,
): Promise<OrgRoleChange> {
  return changeRole(catalog, ref, role, 'org_allow_role');
}

/** Takes `role` off the org's list; existing users and invites that use it are left alone. */
export async function disallowOrgRole(
  catalog: pg.ClientBase,
  ref: string,
  role: string,
): Promise<OrgRoleChange> {
  return changeRole(catalog, ref, role, 'org_disallow_role');
}
