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
 */
#include "postgres.h"

#include "fmgr.h"
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

void		_PG_init(void);

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
							   "1",
							   PGC_INTERNAL,
							   GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							   NULL, NULL, NULL);
	MarkGUCPrefixReserved("pgvpd");
}

/*
 * true. Its point is that calling it loads this library: a guard-path function that calls it
 * either runs with the guarded settings defined (a placeholder a client set before is dropped
 * when the library defines the setting) or fails because the library is gone. Never a
 * client-made placeholder read as a tenant.
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
