/*
 * pgvpd_guard: the settings that carry a verified tenant context, as settings no client can set.
 *
 * Loaded through shared_preload_libraries (or lazily, by the first call of pgvpd_guard_loaded()),
 * it defines the pgvpd.* settings the context needs as PGC_SUSET: only a superuser, or a role
 * granted SET on the parameter (pgvpd_admin, which owns pgvpd.set_context), may change them. SET,
 * set_config, ALTER ROLE/DATABASE ... SET and startup options from anyone else are refused with
 * 42501; RESET ALL and DISCARD ALL bring them back to '' (no tenant: zero rows). The prefix is
 * reserved, so no other pgvpd.* placeholder can be made up.
 *
 * pgvpd.set_context() verifies a token once and copies its values here; pgvpd.current_tenant_id()
 * and pgvpd.context() are then the C functions below, which read them (see migration 000006, the
 * guard path). An empty pgvpd.context means no context, whatever else is set.
 *
 * It also confines tenant roles (docs/guard.md, "Tenant confinement"): the tenants of one role
 * share it, so what one of them does to the role, or to a table they share, it does to all. Its
 * ProcessUtility hook refuses ALTER ROLE (any option, SET/RESET, RENAME) on a tenant role unless a
 * superuser or a member of pgvpd_admin asks, and refuses a tenant role explicit table locks
 * stronger than ROW EXCLUSIVE (what DML takes). The SQL path cannot stop either.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lockdefs.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

/*
 * PostgreSQL 15 brought what the guard path stands on: GRANT SET ON PARAMETER (set_context's owner
 * is not a superuser), MarkGUCPrefixReserved, and dropping a client's placeholder value when the
 * module defines the setting. Preloaded on an older server the module would only lock everyone out.
 */
#if PG_VERSION_NUM < 150000
#error "pgvpd_guard needs PostgreSQL 15 or later"
#endif

PG_MODULE_MAGIC;

static char *pgvpd_context = NULL;
static char *pgvpd_tenant_id = NULL;
static char *pgvpd_user_id = NULL;
static char *pgvpd_values = NULL;
static char *pgvpd_guard = NULL;

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

void		_PG_init(void);

static void pgvpd_guard_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
									   bool readOnlyTree, ProcessUtilityContext context,
									   ParamListInfo params, QueryEnvironment *queryEnv,
									   DestReceiver *dest, QueryCompletion *qc);

static void
define_guarded(const char *name, const char *description, char **variable)
{
	DefineCustomStringVariable(name,
							   description,
							   "Set only by pgvpd.set_context() after it verified a signed context.",
							   variable,
							   "",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, NULL);
}

void
_PG_init(void)
{
	define_guarded("pgvpd.context", "The signed context token of this session.", &pgvpd_context);
	define_guarded("pgvpd.tenant_id", "The verified tenant of this session.", &pgvpd_tenant_id);
	define_guarded("pgvpd.user_id", "The verified user of this session.", &pgvpd_user_id);
	define_guarded("pgvpd.values", "The verified extra context values (a JSON object).",
				   &pgvpd_values);
	DefineCustomStringVariable("pgvpd.guard",
							   "Version of the pgvpd guard module loaded in this session.",
							   NULL,
							   &pgvpd_guard,
							   "2",
							   PGC_INTERNAL,
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgvpd");

	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = pgvpd_guard_ProcessUtility;
}

/*
 * Whether roleid is a tenant role: pgvpd_tenant or a member of it, directly or through other roles
 * (setup makes every registered application role, so every org's connect_as role, a member).
 * Membership, not privileges: a NOINHERIT member is a tenant all the same. The _nosuper variant,
 * because is_member_of_role() counts a superuser a member of every role. pgvpd_admin and its
 * members are not tenant roles: pgvpd_admin holds ADMIN OPTION on pgvpd_tenant (its definer
 * functions grant it), which makes it a member. No pgvpd_tenant role (pgvpd not set up in this
 * cluster): nothing is a tenant role and the module refuses nothing.
 */
static bool
is_tenant_role(Oid roleid)
{
	Oid			tenant = get_role_oid("pgvpd_tenant", true);
	Oid			admin;

	if (!OidIsValid(roleid) || !OidIsValid(tenant) || !is_member_of_role_nosuper(roleid, tenant))
		return false;
	admin = get_role_oid("pgvpd_admin", true);
	return !OidIsValid(admin) || !is_member_of_role_nosuper(roleid, admin);
}

/*
 * ALTER ROLE/USER/GROUP on a tenant role: its password, VALID UNTIL and connection limit, its
 * settings and its name belong to every tenant sharing it. One tenant changing the password locks
 * the others out (and, in org mode, could log in to the app-mode proxy as the connect_as role);
 * SET row_security = off makes every new session of the role fail on protected tables (a query
 * that row security would filter is an error then). Only a superuser or a member of pgvpd_admin
 * may. roleid is InvalidOid when the role does not exist: PostgreSQL says so.
 */
static void
check_alter_role(Oid roleid)
{
	Oid			admin;

	if (superuser() || !is_tenant_role(roleid))
		return;
	admin = get_role_oid("pgvpd_admin", true);
	if (OidIsValid(admin) && is_member_of_role(GetUserId(), admin))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("pgvpd: role \"%s\" is a tenant role: only a superuser or pgvpd_admin may alter it",
					GetUserNameFromId(roleid, false)),
			 errhint("The tenants sharing this role share its password, settings and name; a change "
					 "to them is made by a superuser or a member of pgvpd_admin.")));
}

/*
 * The target of ALTER ROLE: a name, CURRENT_USER, CURRENT_ROLE or SESSION_USER. NULL is
 * ALTER ROLE ALL (which needs a superuser already); PUBLIC is not a role, and PostgreSQL says so.
 */
static Oid
alter_role_target(RoleSpec *role)
{
	if (role == NULL || role->roletype == ROLESPEC_PUBLIC)
		return InvalidOid;
	return get_rolespec_oid(role, true);
}

/* LOCK TABLE's modes as SQL names them, indexed by lock mode. */
static const char *const lock_mode_names[] = {
	[AccessShareLock] = "ACCESS SHARE",
	[RowShareLock] = "ROW SHARE",
	[RowExclusiveLock] = "ROW EXCLUSIVE",
	[ShareUpdateExclusiveLock] = "SHARE UPDATE EXCLUSIVE",
	[ShareLock] = "SHARE",
	[ShareRowExclusiveLock] = "SHARE ROW EXCLUSIVE",
	[ExclusiveLock] = "EXCLUSIVE",
	[AccessExclusiveLock] = "ACCESS EXCLUSIVE",
};

/*
 * Whether this session acts as a tenant: its current user is a tenant role, or it logged in as one
 * and moved to another role with SET ROLE (a tenant role may be a member of a group role that holds
 * the table privileges). Inside a SECURITY DEFINER function the function's owner decides alone.
 */
static bool
acting_as_tenant(void)
{
	if (superuser())
		return false;
	if (is_tenant_role(GetUserId()))
		return true;
	return !InLocalUserIdChange() && is_tenant_role(GetSessionUserId());
}

/*
 * LOCK TABLE by a tenant in a mode stronger than ROW EXCLUSIVE (what INSERT, UPDATE and DELETE
 * take): the tables are shared by every tenant, so such a lock, held as long as the transaction
 * stays open, blocks the writes (EXCLUSIVE and stronger: also the reads) of all of them.
 */
static void
check_lock(int mode)
{
	if (mode <= RowExclusiveLock || !acting_as_tenant())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("pgvpd: tenant roles may not lock tables in %s mode",
					mode <= AccessExclusiveLock ? lock_mode_names[mode] : "this"),
			 errhint("ROW EXCLUSIVE and weaker modes (what DML takes) are allowed.")));
}

/*
 * The checks above, before the statement runs (and before PostgreSQL's own checks, so a tenant
 * is told why whatever else would have refused it); then the previous hook or the standard one.
 * Its signature is the same from PostgreSQL 14 (readOnlyTree) to 18.
 */
static void
pgvpd_guard_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						   ProcessUtilityContext context, ParamListInfo params,
						   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	switch (nodeTag(stmt))
	{
		case T_AlterRoleStmt:
			check_alter_role(alter_role_target(((AlterRoleStmt *) stmt)->role));
			break;
		case T_AlterRoleSetStmt:
			check_alter_role(alter_role_target(((AlterRoleSetStmt *) stmt)->role));
			break;
		case T_RenameStmt:
			/* ALTER ROLE old RENAME TO new: the old name is in subname. */
			if (((RenameStmt *) stmt)->renameType == OBJECT_ROLE)
				check_alter_role(get_role_oid(((RenameStmt *) stmt)->subname, true));
			break;
		case T_LockStmt:
			check_lock(((LockStmt *) stmt)->mode);
			break;
		default:
			break;
	}
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);
}

/*
 * pgvpd.guard_loaded() on the guard path guarantees that set_context writes only settings this
 * module defines, or fails: it always returns true. Its point is that calling it loads this
 * library: a guard-path function that calls it either runs with the guarded settings defined (a
 * placeholder a client set before is dropped when the library defines the setting) or fails
 * because the library is gone. Never a client-made placeholder read as a tenant.
 */
PG_FUNCTION_INFO_V1(pgvpd_guard_loaded);

Datum
pgvpd_guard_loaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(true);
}

/* The verified value, or NULL when the session has no context or the value is empty. */
static Datum
guarded_text(const char *value, FunctionCallInfo fcinfo)
{
	if (pgvpd_context == NULL || pgvpd_context[0] == '\0' || value == NULL || value[0] == '\0')
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(value));
}

/* pgvpd.current_tenant_id() on the guard path. */
PG_FUNCTION_INFO_V1(pgvpd_guard_tenant_id);

Datum
pgvpd_guard_tenant_id(PG_FUNCTION_ARGS)
{
	return guarded_text(pgvpd_tenant_id, fcinfo);
}

/*
 * pgvpd.context(key) on the guard path: 'tenant', 'user', or an extra value of the verified
 * values object (strings as they are, numbers and booleans as text).
 */
PG_FUNCTION_INFO_V1(pgvpd_guard_context);

Datum
pgvpd_guard_context(PG_FUNCTION_ARGS)
{
	text	   *key = PG_GETARG_TEXT_PP(0);
	const char *k = VARDATA_ANY(key);
	int			len = VARSIZE_ANY_EXHDR(key);
	Jsonb	   *values;
	JsonbValue	found;

	if (len == 6 && memcmp(k, "tenant", 6) == 0)
		return guarded_text(pgvpd_tenant_id, fcinfo);
	if (len == 4 && memcmp(k, "user", 4) == 0)
		return guarded_text(pgvpd_user_id, fcinfo);
	if (pgvpd_context == NULL || pgvpd_context[0] == '\0' || pgvpd_values == NULL ||
		pgvpd_values[0] == '\0')
		PG_RETURN_NULL();
	values = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(pgvpd_values)));
	if (!JB_ROOT_IS_OBJECT(values) ||
		getKeyJsonValueFromContainer(&values->root, k, len, &found) == NULL)
		PG_RETURN_NULL();
	switch (found.type)
	{
		case jbvString:
			PG_RETURN_TEXT_P(cstring_to_text_with_len(found.val.string.val, found.val.string.len));
		case jbvNumeric:
			PG_RETURN_TEXT_P(cstring_to_text(DatumGetCString(
				DirectFunctionCall1(numeric_out, NumericGetDatum(found.val.numeric)))));
		case jbvBool:
			PG_RETURN_TEXT_P(cstring_to_text(found.val.boolean ? "true" : "false"));
		default:
			PG_RETURN_NULL();
	}
}
