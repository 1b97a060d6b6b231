/**
 * pgvpd/testing: unit-test your own row-level security policies in PGlite (PostgreSQL in WASM,
 * in-process, no server) with pgvpd installed and a tenant of your choice.
 *
 *   const db = await createPgvpdTestDb();
 *   await db.exec(mySchemaSql); // then select pgvpd.protect('my_table') or your own policies
 *   const rows = await asTenant(db, 'acme', (tx) => tx.query('select * from my_table'));
 *
 * PGlite runs as a superuser, and superusers bypass RLS: a policy test that forgets to switch role
 * proves nothing. asTenant therefore always runs the callback as a NOSUPERUSER NOBYPASSRLS role
 * (default app_user), inside a transaction that is rolled back, and refuses to run it when the role
 * could bypass RLS or row_security is off (the canaries).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import { pgcrypto } from '@electric-sql/pglite/contrib/pgcrypto';

export interface AsTenantOptions {
  /** The role the callback runs as; it must be NOSUPERUSER NOBYPASSRLS. Default: app_user. */
  role?: string;
  /** pgvpd.context('user') inside the callback. */
  user?: string;
  /** Extra context values: pgvpd.context(name). */
  values?: Record<string, string | number | boolean>;
}

/** Finds sql/setup.sql next to this module, in the source tree or in the published package. */
function setupSqlPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'sql', 'setup.sql');
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error(
        'pgvpd/testing: sql/setup.sql not found above ' + fileURLToPath(import.meta.url),
      );
    dir = parent;
  }
}

/** A fresh in-memory PGlite with pgcrypto loaded and pgvpd's SQL core installed. */
export async function createPgvpdTestDb(): Promise<PGlite> {
  const db = await PGlite.create({ extensions: { pgcrypto } });
  await db.exec(readFileSync(setupSqlPath(), 'utf8'));
  return db;
}

/** Why a role cannot be trusted to exercise RLS, or null when it can. */
async function canaryFailure(tx: Transaction): Promise<string | null> {
  const { rows } = await tx.query<{
    role: string;
    rolsuper: boolean;
    rolbypassrls: boolean;
    row_security: string;
  }>(
    `select current_user as role, r.rolsuper, r.rolbypassrls, current_setting('row_security') as row_security
       from pg_catalog.pg_roles r where r.rolname = current_user`,
  );
  const row = rows[0];
  if (row === undefined) return 'the current role is not in pg_roles';
  if (row.rolsuper) return `role ${row.role} is a superuser: RLS would not apply`;
  if (row.rolbypassrls) return `role ${row.role} has BYPASSRLS: RLS would not apply`;
  if (row.row_security !== 'on') return `row_security is ${row.row_security}`;
  return null;
}

/**
 * Runs `fn` as tenant `tenant` (through pgvpd.assume_tenant: a real signed context for this
 * backend), as an unprivileged role, in a transaction that is always rolled back.
 */
export async function asTenant<T>(
  db: PGlite,
  tenant: string,
  fn: (tx: Transaction) => Promise<T>,
  options: AsTenantOptions = {},
): Promise<T> {
  const values = {
    ...options.values,
    ...(options.user === undefined ? {} : { user: options.user }),
  };
  let result: { value: T } | undefined;
  await db.transaction(async (tx) => {
    await tx.query('select pgvpd.assume_tenant($1, $2::jsonb)', [tenant, JSON.stringify(values)]);
    const role = options.role ?? 'app_user';
    await tx.exec(`set local role "${role.replaceAll('"', '""')}"`);
    const failure = await canaryFailure(tx);
    if (failure !== null) throw new Error(`pgvpd/testing: refusing to test policies: ${failure}`);
    result = { value: await fn(tx) };
    await tx.rollback();
  });
  if (result === undefined) throw new Error('pgvpd/testing: the callback did not complete');
  return result.value;
}
