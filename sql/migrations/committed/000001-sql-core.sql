--! Previous: -
--! Hash: sha1:76edee19cdd378c75742d761372edc8fa1e46db3
--! Message: sql core

--! split: 001-roles-schemas.sql
-- Roles and schemas.
-- Why: pgvpd separates three kinds of actor (docs/architecture.md §2): the application role that
-- apps and end users log in as, pgvpd_proxy (the proxy's control connection) and pgvpd_admin
-- (owner of everything pgvpd installs). The API lives in schema pgvpd; secrets and internals live
-- in pgvpd_private, on which no application role has USAGE.
-- Guarantees: safe to run again, and safe to run concurrently in two databases of one cluster
-- (roles are cluster-wide, so a racing CREATE ROLE is tolerated).

do $$
declare
  v_role text;
  v_spec text;
begin
  foreach v_spec in array array[
    'pgvpd_admin:nologin',
    'pgvpd_proxy:login noinherit nosuperuser nobypassrls nocreatedb nocreaterole',
    'app_user:login noinherit nosuperuser nobypassrls nocreatedb nocreaterole'
  ] loop
    v_role := split_part(v_spec, ':', 1);
    if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_role) then
      begin
        execute format('create role %I %s', v_role, split_part(v_spec, ':', 2));
      exception when duplicate_object or unique_violation then
        null; -- created meanwhile by a setup running in another database of this cluster
      end;
    end if;
  end loop;
end;
$$;

create schema if not exists pgvpd;
create schema if not exists pgvpd_private;
-- pgvpd_admin reads other backends' start times in pg_stat_activity (binding a context record to
-- one backend, pruning records of ended ones); those columns are hidden without pg_read_all_stats.
grant pg_read_all_stats to pgvpd_admin;
alter schema pgvpd owner to pgvpd_admin;
alter schema pgvpd_private owner to pgvpd_admin;
revoke all on schema pgvpd_private from public;
grant usage on schema pgvpd to public;

-- Application roles: the roles whose sessions carry a tenant. protect() grants them table
-- privileges, lint() checks that none of them can bypass row-level security. Kept by name so that
-- a role dropped and created again is still known.
create table if not exists pgvpd_private.app_role (
  role_name name primary key
);
insert into pgvpd_private.app_role (role_name) values ('app_user') on conflict do nothing;

-- pgcrypto gives the HMAC and the random bytes. Its schema differs between installations
-- (public, extensions, ...), so pgvpd reaches it through two small wrappers created here with the
-- schema resolved once; they are plain SQL functions and inline into their callers.
--@setup-only
create extension if not exists pgcrypto;
--@end
do $$
declare
  v_schema name;
begin
  select n.nspname into strict v_schema
    from pg_catalog.pg_extension e
    join pg_catalog.pg_namespace n on n.oid = e.extnamespace
   where e.extname = 'pgcrypto';
  execute format(
    'create or replace function pgvpd_private.hmac_sha256(p_data bytea, p_key bytea) returns bytea '
    'language sql immutable strict parallel safe as %L',
    format('select %I.hmac(p_data, p_key, %L)', v_schema, 'sha256'));
  execute format(
    'create or replace function pgvpd_private.random_bytes(p_count integer) returns bytea '
    'language sql volatile strict parallel safe as %L',
    format('select %I.gen_random_bytes(p_count)', v_schema));
end;
$$;

-- base64url without padding or line breaks: tokens travel in a setting and in log-free SQL.
create or replace function pgvpd_private.base64url(p_data bytea) returns text
language sql immutable strict parallel safe
as $$
  select pg_catalog.rtrim(pg_catalog.translate(pg_catalog.encode(p_data, 'base64'), E'+/\n', '-_'), '=')
$$;

create or replace function pgvpd.version() returns text
language sql immutable parallel safe
as $$ select '0.1.0'::text $$;

--! split: 002-signing-keys.sql
-- Signing keys for the tenant context.
-- Why: a context token is an HMAC over its values and the backend pid, under a key that never
-- leaves the database. Tokens name their key (kid), so a new key can be introduced while sessions
-- that hold tokens under the old one keep working; retiring a key ends those sessions' context.
-- Guarantees: only pgvpd_admin can read or change keys; there is always one active key after
-- setup; the last active key cannot be retired.

create table if not exists pgvpd_private.signing_key (
  kid text primary key check (kid ~ '^[a-z0-9]{1,32}$'),
  secret bytea not null check (pg_catalog.length(secret) >= 32),
  created_at timestamptz not null default pg_catalog.clock_timestamp(),
  retired_at timestamptz
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.signing_key', '');

insert into pgvpd_private.signing_key (kid, secret)
select pg_catalog.encode(pgvpd_private.random_bytes(6), 'hex'), pgvpd_private.random_bytes(32)
 where not exists (select 1 from pgvpd_private.signing_key k where k.retired_at is null);

-- Adds a key and makes it the one new tokens are signed with. Old keys stay valid until retired.
create or replace function pgvpd.rotate_key() returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_kid text := pg_catalog.encode(pgvpd_private.random_bytes(6), 'hex');
begin
  insert into pgvpd_private.signing_key (kid, secret) values (v_kid, pgvpd_private.random_bytes(32));
  return v_kid;
end;
$$;

-- Retires a key: tokens signed with it stop verifying, so the sessions holding them see no rows
-- until the proxy gives them a fresh context.
create or replace function pgvpd.retire_key(p_kid text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if not exists (select 1 from pgvpd_private.signing_key k where k.kid = p_kid and k.retired_at is null) then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: no active signing key %L', p_kid);
  end if;
  if not exists (select 1 from pgvpd_private.signing_key k where k.kid <> p_kid and k.retired_at is null) then
    raise exception using errcode = '55000',
      message = pg_catalog.format('pgvpd: %L is the only active signing key', p_kid),
      hint = 'call pgvpd.rotate_key() first';
  end if;
  update pgvpd_private.signing_key k set retired_at = pg_catalog.clock_timestamp() where k.kid = p_kid;
  delete from pgvpd_private.session_context c where c.kid = p_kid;
end;
$$;

--! split: 003-context.sql
-- The signed, fail-closed tenant context (docs/architecture.md §3).
-- Why: a plain setting such as app.current_tenant_id can be changed by any client that can run
-- SQL. pgvpd's context is a token issued by the database itself:
--   v1.<kid>.<pid>.<payload>.<mac>
-- payload is base64url JSON {t: tenant, u: user, v: {extra values}, n: nonce, iat: issued-at};
-- mac is HMAC-SHA-256 under signing key <kid> over everything before it. The token is bound to
-- one backend pid. When it is issued the database also records, for that pid, the token and its
-- values (pgvpd_private.session_context, unlogged, beside the signing keys and under the same
-- privileges: whoever can read it can read the keys). The token travels to the session in the
-- setting pgvpd.context, which anyone may set.
-- Guarantees: pgvpd.current_tenant_id() and pgvpd.context(key) return a value only while the
-- session's pgvpd.context holds exactly the token the database issued for pg_backend_pid(), under
-- a key that is not retired; in every other case (unset, reset, discarded, garbage, truncated,
-- forged, copied from another session, re-signed with other values) they return NULL, and a
-- policy comparing a column with NULL matches no row.
-- Cost: one indexed lookup and one text comparison per statement, because policies call the
-- accessor as an InitPlan ((select pgvpd.current_tenant_id())). Recomputing the HMAC on every
-- statement cost about 2.5 times as much per call, and even a SHA-256 of the token per statement
-- cost 7% of primary-key select throughput (docs/benchmarks.md); the HMAC is checked once, in
-- set_context(), when the token enters the session.

create unlogged table if not exists pgvpd_private.session_context (
  pid integer primary key,
  token text not null,
  kid text not null references pgvpd_private.signing_key (kid) on delete cascade,
  tenant text not null,
  username text,
  vals jsonb not null default '{}'::jsonb,
  backend_start timestamptz,
  issued_at timestamptz not null default pg_catalog.clock_timestamp()
);

-- Issues a token for backend p_pid and records it. Internal: callers are issue_context (the proxy)
-- and assume_tenant (tests, psql). Validates every value; the tenant and values are data, never SQL.
create or replace function pgvpd_private.issue(p_pid integer, p_tenant text, p_user text, p_vals jsonb)
returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_key pgvpd_private.signing_key;
  v_start timestamptz;
  v_vals jsonb := coalesce(p_vals, '{}'::jsonb);
  v_msg text;
  v_token text;
  v_bad text;
begin
  if p_tenant is null or p_tenant !~ '^[^[:cntrl:]]{1,255}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: tenant must be 1 to 255 characters without control characters';
  end if;
  if p_user is not null and p_user !~ '^[^[:cntrl:]]{1,255}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: user must be 1 to 255 characters without control characters';
  end if;
  if pg_catalog.jsonb_typeof(v_vals) <> 'object' then
    raise exception using errcode = '22023', message = 'pgvpd: context values must be a JSON object';
  end if;
  select k into v_bad from pg_catalog.jsonb_each(v_vals) as e(k, v)
   where k !~ '^[a-z_][a-z0-9_]{0,62}$' or k in ('tenant', 'user')
      or pg_catalog.jsonb_typeof(v) not in ('string', 'number', 'boolean')
   limit 1;
  if found then
    raise exception using errcode = '22023',
      message = pg_catalog.format('pgvpd: context value %L is not allowed', v_bad),
      hint = 'names match ^[a-z_][a-z0-9_]{0,62}$ (not tenant or user); values are strings, numbers or booleans';
  end if;

  select a.backend_start into v_start
    from pg_catalog.pg_stat_activity a
   where a.pid = p_pid and a.datname = pg_catalog.current_database() and a.backend_type = 'client backend';
  if not found and p_pid <> pg_catalog.pg_backend_pid() then
    raise exception using errcode = '22023',
      message = pg_catalog.format('pgvpd: no client backend with pid %s in database %I', p_pid, pg_catalog.current_database());
  end if;

  select k.* into v_key from pgvpd_private.signing_key k
   where k.retired_at is null order by k.created_at desc, k.kid limit 1;
  if not found then
    raise exception using errcode = '55000', message = 'pgvpd: no active signing key', hint = 'call pgvpd.rotate_key()';
  end if;

  v_msg := pg_catalog.format('v1.%s.%s.%s', v_key.kid, p_pid, pgvpd_private.base64url(pg_catalog.convert_to(
    pg_catalog.jsonb_build_object(
      't', p_tenant, 'u', p_user, 'v', v_vals,
      'n', pg_catalog.encode(pgvpd_private.random_bytes(16), 'hex'),
      'iat', pg_catalog.floor(extract(epoch from pg_catalog.clock_timestamp())))::text,
    'UTF8')));
  v_token := v_msg || '.' || pgvpd_private.base64url(pgvpd_private.hmac_sha256(pg_catalog.convert_to(v_msg, 'UTF8'), v_key.secret));

  insert into pgvpd_private.session_context as c (pid, token, kid, tenant, username, vals, backend_start)
  values (p_pid, v_token, v_key.kid, p_tenant, p_user, v_vals, v_start)
  on conflict (pid) do update
     set token = excluded.token, kid = excluded.kid, tenant = excluded.tenant,
         username = excluded.username, vals = excluded.vals, backend_start = excluded.backend_start,
         issued_at = pg_catalog.clock_timestamp();
  return v_token;
end;
$$;

-- The proxy's entry point: issue the context for the client session running as backend p_backend_pid.
-- EXECUTE is granted to pgvpd_proxy only.
create or replace function pgvpd.issue_context(p_backend_pid integer, p_tenant text, p_user text default null, p_vals jsonb default '{}'::jsonb)
returns text
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if pg_catalog.random() < 0.01 then
    perform pgvpd.prune_contexts();
  end if;
  return pgvpd_private.issue(p_backend_pid, p_tenant, p_user, p_vals);
end;
$$;

-- Puts a token into the current session, after checking it once in full: format, key, HMAC (compared
-- through a second HMAC so that timing says nothing about the expected bytes), backend pid, and
-- that it is the token last issued for this backend. Raises 28000 when any check fails, so that a
-- proxy ends the connection instead of handing the client a session without context.
create or replace function pgvpd.set_context(p_token text) returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_parts text[] := pg_catalog.string_to_array(p_token, '.');
  v_key pgvpd_private.signing_key;
  v_msg text;
  v_ctx pgvpd_private.session_context;
begin
  if p_token is null or pg_catalog.cardinality(v_parts) <> 5 or v_parts[1] <> 'v1' then
    raise exception using errcode = '28000', message = 'pgvpd: malformed context token';
  end if;
  select k.* into v_key from pgvpd_private.signing_key k where k.kid = v_parts[2] and k.retired_at is null;
  v_msg := pg_catalog.array_to_string(v_parts[1:4], '.');
  if not found
     or pgvpd_private.hmac_sha256(pg_catalog.convert_to(v_parts[5], 'UTF8'), v_key.secret)
        <> pgvpd_private.hmac_sha256(pg_catalog.convert_to(pgvpd_private.base64url(
             pgvpd_private.hmac_sha256(pg_catalog.convert_to(v_msg, 'UTF8'), v_key.secret)), 'UTF8'), v_key.secret) then
    raise exception using errcode = '28000', message = 'pgvpd: context token signature does not verify';
  end if;
  if v_parts[3] <> pg_catalog.pg_backend_pid()::text then
    raise exception using errcode = '28000', message = 'pgvpd: context token was issued for another backend';
  end if;
  select c.* into v_ctx from pgvpd_private.session_context c
   where c.pid = pg_catalog.pg_backend_pid() and c.token = p_token;
  if not found then
    raise exception using errcode = '28000', message = 'pgvpd: context token is no longer current for this backend';
  end if;
  perform pg_catalog.set_config('pgvpd.context', p_token, false);
  return v_ctx.tenant;
end;
$$;

-- The accessors. SECURITY DEFINER because the record is private; STABLE so that a policy's
-- (select ...) runs once per statement; PARALLEL RESTRICTED because pg_backend_pid() differs in a
-- parallel worker.
create or replace function pgvpd.current_tenant_id() returns text
language plpgsql stable security definer parallel restricted set search_path = ''
as $$
declare
  v_tenant text;
begin
  select c.tenant into v_tenant
    from pgvpd_private.session_context c
   where c.pid = pg_catalog.pg_backend_pid()
     and c.token = pg_catalog.current_setting('pgvpd.context', true);
  return v_tenant;
end;
$$;

-- pgvpd.context('tenant'), pgvpd.context('user') or any extra value the token carries.
create or replace function pgvpd.context(p_key text) returns text
language plpgsql stable security definer parallel restricted set search_path = ''
as $$
declare
  v_value text;
begin
  select case p_key when 'tenant' then c.tenant when 'user' then c.username else c.vals ->> p_key end
    into v_value
    from pgvpd_private.session_context c
   where c.pid = pg_catalog.pg_backend_pid()
     and c.token = pg_catalog.current_setting('pgvpd.context', true);
  return v_value;
end;
$$;

-- For tests of your own policies (PGlite, psql) and for operators: become tenant p_tenant in this
-- session without a proxy. p_vals may carry 'user' and extra values. EXECUTE: pgvpd_admin only.
create or replace function pgvpd.assume_tenant(p_tenant text, p_vals jsonb default '{}'::jsonb) returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_vals jsonb := coalesce(p_vals, '{}'::jsonb);
begin
  if pg_catalog.jsonb_typeof(v_vals) <> 'object' then
    raise exception using errcode = '22023', message = 'pgvpd: context values must be a JSON object';
  end if;
  perform pgvpd.set_context(pgvpd_private.issue(pg_catalog.pg_backend_pid(), p_tenant, v_vals ->> 'user', v_vals - 'user'));
  return p_tenant;
end;
$$;

-- Forgets records of backends that have ended (or whose pid now belongs to a newer backend), so a
-- recycled pid never meets an old record. Called now and then by issue_context; safe at any time.
create or replace function pgvpd.prune_contexts() returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_count integer;
begin
  delete from pgvpd_private.session_context c
   where c.pid <> pg_catalog.pg_backend_pid()
     and not exists (
       select 1 from pg_catalog.pg_stat_activity a
        where a.pid = c.pid and (c.backend_start is null or a.backend_start = c.backend_start));
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

--! split: 004-protect.sql
-- protect / unprotect: turn tenant isolation on for one table, and exactly back off.
-- Why: enabling RLS, forcing it, writing the policy right (USING and WITH CHECK, the accessor as an
-- InitPlan, the right type) and granting the application roles is easy to get subtly wrong by hand.
-- Guarantees: protect() leaves the table with RLS enabled and forced and one policy,
-- pgvpd_tenant_isolation, for all commands and all roles; running it again (also with another
-- column) is harmless; unknown columns raise 42703. It remembers what it changed in the policy's
-- comment (so the record lives in the catalog, keyed by the table's OID, and survives pg_dump),
-- and unprotect() reverts exactly that: the policy, the RLS flags it turned on, the grants it made.
-- Both run with the caller's rights: the caller must own the table.

create or replace function pgvpd.add_app_role(p_role regrole) returns void
language sql volatile security definer set search_path = ''
as $$
  insert into pgvpd_private.app_role (role_name) values (p_role::text::name) on conflict do nothing
$$;

create or replace function pgvpd.app_roles() returns setof name
language sql stable security definer set search_path = ''
as $$
  select a.role_name from pgvpd_private.app_role a
   where exists (select 1 from pg_catalog.pg_roles r where r.rolname = a.role_name)
   order by 1
$$;

-- The names status() and lint() take for a tenant column when a table is not protected yet.
create or replace function pgvpd.tenant_column_names() returns name[]
language sql immutable parallel safe
as $$
  select array['tenant_id', 'tenant', 'org_id', 'organization_id', 'account_id', 'customer_id',
               'workspace_id', 'team_id', 'company_id', 'client_id']::name[]
$$;

-- The note protect() keeps on its policy, or NULL when the table has no pgvpd policy.
create or replace function pgvpd.protection_note(p_table regclass) returns jsonb
language sql stable set search_path = ''
as $$
  select coalesce(pg_catalog.substr(pg_catalog.obj_description(p.oid, 'pg_policy'), 7)::jsonb, '{}'::jsonb)
    from pg_catalog.pg_policy p
   where p.polrelid = p_table and p.polname = 'pgvpd_tenant_isolation'
$$;

create or replace function pgvpd.protect(p_table regclass, p_column name default 'tenant_id') returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_class pg_catalog.pg_class;
  v_type oid;
  v_note jsonb := pgvpd.protection_note(p_table);
  v_grants jsonb;
  v_expr text;
  v_role name;
  v_obj regclass;
  v_kind text;
  v_priv text;
  v_protected boolean := v_note is not null;
begin
  select c.* into v_class from pg_catalog.pg_class c where c.oid = p_table;
  if v_class.relkind not in ('r', 'p') then
    raise exception using errcode = '42809', message = pg_catalog.format('pgvpd: %s is not a table', p_table);
  end if;
  select a.atttypid into v_type from pg_catalog.pg_attribute a
   where a.attrelid = p_table and a.attname = p_column and a.attnum > 0 and not a.attisdropped;
  if not found then
    raise exception using errcode = '42703',
      message = pg_catalog.format('pgvpd: column %I does not exist in table %s', p_column, p_table),
      hint = 'pass the tenant column as the second argument: pgvpd.protect(''schema.table'', ''column'')';
  end if;

  if v_note is null then
    v_note := pg_catalog.jsonb_build_object(
      'rls_enabled_before', v_class.relrowsecurity,
      'rls_forced_before', v_class.relforcerowsecurity,
      'grants', '[]'::jsonb);
  end if;
  v_grants := coalesce(v_note -> 'grants', '[]'::jsonb);

  execute pg_catalog.format('alter table %s enable row level security, force row level security', p_table);
  if v_protected then
    execute pg_catalog.format('drop policy pgvpd_tenant_isolation on %s', p_table);
  end if;
  if v_type in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'name'::regtype) then
    v_expr := pg_catalog.format('%I = (select pgvpd.current_tenant_id())', p_column);
  else
    v_expr := pg_catalog.format('%I = (select pgvpd.current_tenant_id()::%s)', p_column, v_type::regtype);
  end if;
  execute pg_catalog.format(
    'create policy pgvpd_tenant_isolation on %s as permissive for all to public using (%s) with check (%s)',
    p_table, v_expr, v_expr);

  -- Grants: the table for DML, and sequences it owns (serial / identity) for inserts. Only what the
  -- role does not hold directly already is granted, and only that is recorded.
  for v_role in select * from pgvpd.app_roles() loop
    for v_obj, v_kind, v_priv in
      select p_table, 'table', x from pg_catalog.unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE']) x
      union all
      select d.objid::regclass, 'sequence', x
        from pg_catalog.pg_depend d
        join pg_catalog.pg_class s on s.oid = d.objid and s.relkind = 'S'
        cross join pg_catalog.unnest(array['USAGE', 'SELECT']) x
       where d.classid = 'pg_catalog.pg_class'::regclass and d.refobjid = p_table and d.deptype in ('a', 'i')
    loop
      if not exists (
        select 1 from pg_catalog.pg_class c,
               pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault(case when v_kind = 'table' then 'r' else 's' end::"char", c.relowner))) x
         where c.oid = v_obj and x.grantee = (select r.oid from pg_catalog.pg_roles r where r.rolname = v_role)
           and x.privilege_type = v_priv
      ) then
        execute pg_catalog.format('grant %s on %s %s to %I', v_priv, v_kind, v_obj, v_role);
        v_grants := v_grants || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'role', v_role, 'kind', v_kind, 'object', v_obj::oid, 'privilege', v_priv));
      end if;
    end loop;
  end loop;

  v_note := v_note || pg_catalog.jsonb_build_object('column', p_column, 'grants', v_grants);
  execute pg_catalog.format('comment on policy pgvpd_tenant_isolation on %s is %L', p_table, 'pgvpd:' || v_note::text);
  return pg_catalog.format('%s protected on column %I', p_table, p_column);
end;
$$;

create or replace function pgvpd.unprotect(p_table regclass) returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_note jsonb := pgvpd.protection_note(p_table);
  v_grant jsonb;
begin
  if v_note is null then
    return pg_catalog.format('%s was not protected by pgvpd', p_table);
  end if;
  for v_grant in select * from pg_catalog.jsonb_array_elements(coalesce(v_note -> 'grants', '[]'::jsonb)) loop
    if exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_grant ->> 'role')
       and exists (select 1 from pg_catalog.pg_class c where c.oid = (v_grant ->> 'object')::oid) then
      execute pg_catalog.format('revoke %s on %s %s from %I', v_grant ->> 'privilege', v_grant ->> 'kind',
        ((v_grant ->> 'object')::oid)::regclass, v_grant ->> 'role');
    end if;
  end loop;
  execute pg_catalog.format('drop policy pgvpd_tenant_isolation on %s', p_table);
  if not coalesce((v_note ->> 'rls_forced_before')::boolean, false) then
    execute pg_catalog.format('alter table %s no force row level security', p_table);
  end if;
  if not coalesce((v_note ->> 'rls_enabled_before')::boolean, false) then
    execute pg_catalog.format('alter table %s disable row level security', p_table);
  end if;
  return pg_catalog.format('%s unprotected', p_table);
end;
$$;

--! split: 005-status.sql
-- status: where does tenant isolation stand, table by table?
-- Why: the question an operator asks first ("is every tenant table protected?") deserves one query.
-- Guarantees: one row per user table (ordinary or partitioned) in every schema that is not a
-- system schema, pgvpd's own, or an extension's; tables are found and joined by OID, so quoted and
-- schema-qualified names work. Verdicts:
--   protected         pgvpd policy present, RLS enabled and forced
--   not forced        pgvpd policy present and RLS enabled, but the owner bypasses it
--   rls disabled      pgvpd policy present but RLS is off
--   unprotected       a tenant-like column and no pgvpd policy
--   custom policies   RLS enabled with policies of the user's own
--   no tenant column  nothing tenant-like: pgvpd has no opinion

create or replace function pgvpd.user_tables() returns setof regclass
language sql stable set search_path = ''
as $$
  select c.oid::regclass
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
   where c.relkind in ('r', 'p')
     and n.nspname not in ('pg_catalog', 'information_schema', 'pgvpd', 'pgvpd_private', 'graphile_migrate')
     and n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
     and not exists (
       select 1 from pg_catalog.pg_depend d
        where d.classid = 'pg_catalog.pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')
$$;

create or replace function pgvpd.status()
returns table (
  table_oid regclass,
  schema_name name,
  table_name name,
  tenant_column name,
  rls_enabled boolean,
  rls_forced boolean,
  pgvpd_policy boolean,
  verdict text
)
language sql stable set search_path = ''
as $$
  select c.oid::regclass,
         n.nspname,
         c.relname,
         coalesce(note.col, guess.col),
         c.relrowsecurity,
         c.relforcerowsecurity,
         note.col is not null,
         case
           when note.col is not null and c.relrowsecurity and c.relforcerowsecurity then 'protected'
           when note.col is not null and c.relrowsecurity then 'not forced'
           when note.col is not null then 'rls disabled'
           when guess.col is not null then 'unprotected'
           when c.relrowsecurity then 'custom policies'
           else 'no tenant column'
         end
    from pgvpd.user_tables() t
    join pg_catalog.pg_class c on c.oid = t
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    cross join lateral (select pgvpd.protection_note(c.oid::regclass) as v) pn
    left join lateral (select coalesce(pn.v ->> 'column', '?')::name as col where pn.v is not null) note on true
    left join lateral (
      select a.attname as col
        from pg_catalog.pg_attribute a
       where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
         and a.attname = any (pgvpd.tenant_column_names())
       order by pg_catalog.array_position(pgvpd.tenant_column_names(), a.attname)
       limit 1
    ) guess on true
   order by n.nspname, c.relname
$$;

--! split: 006-lint.sql
-- lint: the multi-tenant safety checks, one row per finding.
-- Why: most tenant leaks are configuration, not code: a login role that bypasses RLS, a table
-- nobody protected, a view that reads as its owner. lint() names each one with how to fix it.
-- Guarantees: on a database where pgvpd is installed and nothing is wrong it returns no rows.
-- Checks (check column):
--   app_role_privileged         an application role is superuser or BYPASSRLS, or a member of one
--   app_role_pgvpd_member       an application role is a member of pgvpd_admin or pgvpd_proxy
--   unprotected_tenant_table    a table with a tenant-like column is readable by an application
--                               role and has no pgvpd policy, or RLS is off
--   rls_not_forced              RLS is enabled but not forced, so the table owner bypasses it
--   view_not_security_invoker   a view over an RLS table runs with its owner's rights
--   matview_over_rls_table      a materialized view stores rows of an RLS table for everyone
--   definer_without_search_path a SECURITY DEFINER function does not pin search_path
--   policy_per_row_call         a policy calls current_setting / the accessor per row, not as (select ...)
--   public_schema_create        PUBLIC may create objects in schema public (shadowing)

create or replace function pgvpd.lint()
returns table (severity text, check_name text, object text, detail text, fix text)
language sql stable set search_path = ''
as $$
  with app as (
    select r.oid, r.rolname from pg_catalog.pg_roles r where r.rolname in (select * from pgvpd.app_roles())
  ),
  rls_tables as (
    select c.oid from pg_catalog.pg_class c where c.relrowsecurity and c.relkind in ('r', 'p')
  )
  select 'error', 'app_role_privileged', a.rolname::text,
         case when a.oid = x.oid
              then pg_catalog.format('application role %I is %s', a.rolname,
                     case when x.rolsuper then 'a superuser' else 'BYPASSRLS' end)
              else pg_catalog.format('application role %I is a member of %I, which is %s', a.rolname, x.rolname,
                     case when x.rolsuper then 'a superuser' else 'BYPASSRLS' end) end,
         case when a.oid = x.oid
              then pg_catalog.format('alter role %I nosuperuser nobypassrls', a.rolname)
              else pg_catalog.format('revoke %I from %I', x.rolname, a.rolname) end
    from app a
    join pg_catalog.pg_roles x on pg_catalog.pg_has_role(a.oid, x.oid, 'MEMBER')
   where x.rolsuper or x.rolbypassrls
  union all
  select 'error', 'app_role_pgvpd_member', a.rolname::text,
         pg_catalog.format('application role %I is a member of %I', a.rolname, x.rolname),
         pg_catalog.format('revoke %I from %I', x.rolname, a.rolname)
    from app a
    join pg_catalog.pg_roles x on x.rolname in ('pgvpd_admin', 'pgvpd_proxy') and pg_catalog.pg_has_role(a.oid, x.oid, 'MEMBER')
  union all
  select 'error', 'unprotected_tenant_table', s.table_oid::text,
         pg_catalog.format('%s has tenant column %I, is readable by %s, and its verdict is %L', s.table_oid, s.tenant_column,
           (select pg_catalog.string_agg(pg_catalog.quote_ident(a.rolname), ', ' order by a.rolname) from app a
             where pg_catalog.has_table_privilege(a.oid, s.table_oid, 'SELECT')), s.verdict),
         pg_catalog.format('select pgvpd.protect(%L, %L)', s.table_oid, s.tenant_column)
    from pgvpd.status() s
   where s.verdict in ('unprotected', 'rls disabled')
     and exists (select 1 from app a where pg_catalog.has_table_privilege(a.oid, s.table_oid, 'SELECT'))
  union all
  select 'warning', 'rls_not_forced', c.oid::regclass::text,
         pg_catalog.format('row level security on %s is enabled but not forced: its owner %I sees every row',
           c.oid::regclass, pg_catalog.pg_get_userbyid(c.relowner)),
         pg_catalog.format('alter table %s force row level security', c.oid::regclass)
    from pg_catalog.pg_class c
   where c.oid in (select * from pgvpd.user_tables()) and c.relrowsecurity and not c.relforcerowsecurity
  union all
  select 'error',
         case when v.relkind = 'v' then 'view_not_security_invoker' else 'matview_over_rls_table' end,
         v.oid::regclass::text,
         case when v.relkind = 'v'
              then pg_catalog.format('view %s reads %s with the rights of its owner %I, not of the querying role',
                     v.oid::regclass, t.oid::regclass, pg_catalog.pg_get_userbyid(v.relowner))
              else pg_catalog.format('materialized view %s holds rows of %s computed once, for every reader',
                     v.oid::regclass, t.oid::regclass) end,
         case when v.relkind = 'v'
              then pg_catalog.format('alter view %s set (security_invoker = true)', v.oid::regclass)
              else pg_catalog.format('drop materialized view %s, or revoke it from application roles', v.oid::regclass) end
    from pg_catalog.pg_class v
    join pg_catalog.pg_namespace n on n.oid = v.relnamespace
    join lateral (
      select distinct d.refobjid as oid
        from pg_catalog.pg_rewrite rw
        join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_rewrite'::regclass and d.objid = rw.oid
       where rw.ev_class = v.oid and d.refclassid = 'pg_catalog.pg_class'::regclass and d.refobjid <> v.oid
    ) t on t.oid in (select * from rls_tables)
   where v.relkind in ('v', 'm')
     and n.nspname not in ('pg_catalog', 'information_schema', 'pgvpd', 'pgvpd_private')
     and (v.relkind = 'm'
          or not coalesce(pg_catalog.array_to_string(v.reloptions, ',') ~* 'security_invoker=(true|on|1|yes)', false))
  union all
  select 'error', 'definer_without_search_path', p.oid::regprocedure::text,
         pg_catalog.format('SECURITY DEFINER function %s runs with the search_path of its caller', p.oid::regprocedure),
         pg_catalog.format('alter function %s set search_path = ''''', p.oid::regprocedure)
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
   where p.prosecdef
     and n.nspname not in ('pg_catalog', 'information_schema')
     and not exists (select 1 from pg_catalog.unnest(p.proconfig) c where c like 'search_path=%')
  union all
  select 'warning', 'policy_per_row_call',
         pg_catalog.format('%I on %s', pol.polname, pol.polrelid::regclass),
         pg_catalog.format('policy %I on %s calls %s for every row instead of once per statement',
           pol.polname, pol.polrelid::regclass, m[1]),
         'wrap the call in a scalar subquery: (select ' || m[1] || '(...)), or use select pgvpd.protect(...)'
    from pg_catalog.pg_policy pol
    cross join lateral (
      select pg_catalog.regexp_replace(
               coalesce(pg_catalog.pg_get_expr(pol.polqual, pol.polrelid), '') || ' ' ||
               coalesce(pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid), ''),
               '\m(pgvpd|public|pg_catalog)\.', '', 'g') as expr
    ) e
    -- calls that stand right after SELECT in a scalar subquery run once; mark them, then look for the rest
    cross join lateral pg_catalog.regexp_replace(e.expr,
      'SELECT\s+\(*\s*(current_setting|current_tenant_id|context)\(', 'SELECT \1_once(', 'g') as once(expr)
    cross join lateral pg_catalog.regexp_match(once.expr, '\m(current_setting|current_tenant_id|context)\(') m
   where m is not null
  union all
  select 'warning', 'public_schema_create', 'schema public',
         'every role may create objects in schema public, where they can shadow unqualified names',
         'revoke create on schema public from public'
    from pg_catalog.pg_namespace n
   where n.nspname = 'public' and pg_catalog.has_schema_privilege('public', n.oid, 'CREATE')
$$;

--! split: 007-compat.sql
-- Names from the original pgvpd design, so that existing policies and scripts keep working.
-- current_tenant_id() inlines into its caller, so it costs the same as pgvpd.current_tenant_id().

create or replace function public.current_tenant_id() returns text
language sql stable parallel restricted
as $$ select pgvpd.current_tenant_id() $$;

create or replace function public.pgvpd_protect(p_table text, p_column text default 'tenant_id') returns text
language sql volatile
as $$ select pgvpd.protect(p_table::regclass, p_column::name) $$;

create or replace function public.pgvpd_status()
returns table (
  table_oid regclass, schema_name name, table_name name, tenant_column name,
  rls_enabled boolean, rls_forced boolean, pgvpd_policy boolean, verdict text
)
language sql stable
as $$ select * from pgvpd.status() $$;

--! split: 008-privileges.sql
-- Ownership and EXECUTE, stated once for everything above.
-- Why: functions are executable by PUBLIC when created; every SECURITY DEFINER function here is
-- revoked from PUBLIC and granted to the one role that needs it (docs/architecture.md §1).
-- pgvpd_admin owns all of pgvpd's objects, so definer functions run as a role that is not a
-- superuser.

do $$
declare
  v_obj record;
begin
  for v_obj in
    select 'function' as kind, p.oid::regprocedure::text as name
      from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('pgvpd', 'pgvpd_private')
    union all
    select 'table', c.oid::regclass::text
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('pgvpd', 'pgvpd_private') and c.relkind in ('r', 'p', 'v', 'S')
  loop
    execute format('alter %s %s owner to pgvpd_admin', v_obj.kind, v_obj.name);
  end loop;
end;
$$;

revoke all on all functions in schema pgvpd_private from public;
revoke all on all functions in schema pgvpd from public;
revoke all on all tables in schema pgvpd_private from public;

-- Anyone: the accessors (fail closed), setting a token (only a valid one takes), and the reports.
grant execute on function
  pgvpd.current_tenant_id(), pgvpd.context(text), pgvpd.set_context(text), pgvpd.version(),
  pgvpd.app_roles(), pgvpd.tenant_column_names(), pgvpd.protection_note(regclass), pgvpd.user_tables(),
  pgvpd.status(), pgvpd.lint(), pgvpd.protect(regclass, name), pgvpd.unprotect(regclass)
  to public;
-- The proxy's control connection: issuing context, nothing else.
grant execute on function pgvpd.issue_context(integer, text, text, jsonb) to pgvpd_proxy;
-- Operators.
grant execute on function
  pgvpd.assume_tenant(text, jsonb), pgvpd.rotate_key(), pgvpd.retire_key(text), pgvpd.prune_contexts(),
  pgvpd.add_app_role(regrole)
  to pgvpd_admin;
