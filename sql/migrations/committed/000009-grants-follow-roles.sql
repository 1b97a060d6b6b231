--! Previous: sha1:dd6505dc1fcdd91972423b75eeaf5dc2a88fdcc0
--! Hash: sha1:4f346fe2415236f8644384a5fe18212f7d646ff8
--! Message: grants follow roles

--! split: 1-grants-follow-roles.sql
-- Table privileges follow the tenant roles that need them.
-- Why: protect() granted the application roles registered when it ran, as the table's owner, and
-- nothing later. A role registered afterwards (pgvpd.add_app_role, or an org's connect_as role
-- when pgvpd.user_add or user_set_connect_as names it) had no privilege on the protected tables:
-- its sessions got 42501 (permission denied), while status() said protected and lint() found
-- nothing. pgvpd_admin, which registers roles, is not the owner of the customer's tables and could
-- not grant them.
-- How: protect() (run by the table's owner) grants pgvpd_admin, WITH GRANT OPTION, exactly the
-- privileges it grants tenant roles (pgvpd.protected_privileges: SELECT, INSERT, UPDATE, DELETE
-- on the table, USAGE and SELECT on the sequences it owns), and USAGE on the table's schema when
-- pgvpd_admin lacks it, and records both in its note. Then pgvpd_admin grants them:
--   - protect() grants every registered role (pgvpd.grant_protected(table));
--   - registering a role grants it those privileges on every protected table (a trigger on
--     pgvpd_private.app_role);
--   - a role that stops being registered (the last user referring to a connect_as role goes)
--     loses the privileges pgvpd_admin granted it on protected tables, and only those (a grant
--     made by hand, or by an earlier protect() as the owner, has another grantor and stays);
--   - unprotect() revokes what it delegated to pgvpd_admin with CASCADE, so every grant
--     pgvpd_admin made on the table goes with it, then the grants protect made itself.
-- Guarantees: a grant is made only to a role registered in pgvpd_private.app_role that exists, of
-- a privilege pgvpd_admin holds WITH GRANT OPTION on a table carrying pgvpd's policy, and only
-- when the role does not hold it directly already; so pgvpd.grant_protected() may run for anyone
-- (protect() runs with its caller's rights and calls it): it can only bring the database to what
-- the owner (protect) and the operator (registration) decided. lint() reports a registered role
-- that lacks one of those privileges on a protected table (role_missing_grants, an error).
-- pgvpd_admin holding these privileges sees no more rows than any role: RLS is forced and it
-- carries no context unless assume_tenant gives it one.

-- What protect() grants a tenant role on p_table: the table for DML, and the sequences it owns
-- (serial / identity) for inserts.
create or replace function pgvpd.protected_privileges(p_table regclass)
returns table (kind text, object regclass, privilege text)
language sql stable rows 6 set search_path = ''
as $$
  select 'table', p_table, x
    from pg_catalog.unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE']) x
  union all
  select 'sequence', d.objid::regclass, x
    from pg_catalog.pg_depend d
    join pg_catalog.pg_class s on s.oid = d.objid and s.relkind = 'S'
    cross join pg_catalog.unnest(array['USAGE', 'SELECT']) x
   where d.classid = 'pg_catalog.pg_class'::regclass and d.refobjid = p_table and d.deptype in ('a', 'i')
$$;

-- Whether p_role (an oid; 0 is PUBLIC) holds p_privilege on relation p_object directly, not
-- through a role it is a member of (and with grant option when p_grantable): what protect() and
-- grant_protected() test before they grant.
create or replace function pgvpd.relation_privilege_held(p_object regclass, p_privilege text, p_role oid, p_grantable boolean)
returns boolean
language sql stable set search_path = ''
as $$
  select exists (
    select 1
      from pg_catalog.pg_class c,
           pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault(
             case when c.relkind = 'S' then 's' else 'r' end::"char", c.relowner))) x
     where c.oid = p_object and x.grantee = p_role and x.privilege_type = p_privilege
       and (x.is_grantable or not p_grantable))
$$;

-- Grants every registered tenant role (or only p_role) the privileges protect() grants, on every
-- protected table (or only p_table), where pgvpd_admin may grant them and the role lacks them.
-- Returns how many privileges it granted. A table pgvpd_admin cannot reach (no USAGE on its
-- schema) is skipped: lint's role_missing_grants reports what is missing.
create or replace function pgvpd.grant_protected(p_table regclass default null, p_role name default null)
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_admin oid := 'pgvpd_admin'::regrole::oid;
  v_table regclass;
  v_grant record;
  v_count integer := 0;
begin
  for v_table in
    select s.table_oid from pgvpd.status() s
     where s.pgvpd_policy and (p_table is null or s.table_oid = p_table)
     order by 1
  loop
    begin
      for v_grant in
        select r.rolname, p.kind, p.object, p.privilege
          from pgvpd_private.app_role a
          join pg_catalog.pg_roles r on r.rolname = a.role_name
          cross join pgvpd.protected_privileges(v_table) p
         where (p_role is null or a.role_name = p_role)
           and r.rolname not in ('pgvpd_admin', 'pgvpd_proxy')
           and pgvpd.relation_privilege_held(p.object, p.privilege, v_admin, true)
           and not pgvpd.relation_privilege_held(p.object, p.privilege, r.oid, false)
         order by 1, 2 desc, 3, 4
      loop
        execute pg_catalog.format('grant %s on %s %s to %I', v_grant.privilege, v_grant.kind, v_grant.object, v_grant.rolname);
        v_count := v_count + 1;
      end loop;
    exception when insufficient_privilege then
      null; -- pgvpd_admin cannot reach the table by name; lint reports the roles left without it
    end;
  end loop;
  return v_count;
end;
$$;

-- Revokes from p_role what pgvpd_admin granted it on protected tables, and nothing else.
create or replace function pgvpd_private.revoke_protected(p_role name) returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_admin oid := 'pgvpd_admin'::regrole::oid;
  v_role oid;
  v_grant record;
begin
  select r.oid into v_role from pg_catalog.pg_roles r where r.rolname = p_role;
  if v_role is null then
    return;
  end if;
  for v_grant in
    select p.kind, p.object, p.privilege
      from pgvpd.status() s
      cross join pgvpd.protected_privileges(s.table_oid) p
     where s.pgvpd_policy
       and exists (
         select 1 from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) x
          where c.oid = p.object and x.grantee = v_role and x.grantor = v_admin and x.privilege_type = p.privilege)
     order by 2, 1 desc, 3
  loop
    begin
      execute pg_catalog.format('revoke %s on %s %s from %I', v_grant.privilege, v_grant.kind, v_grant.object, p_role);
    exception when insufficient_privilege then
      null; -- no longer reachable by name: the grant stays, and so does its record in the ACL
    end;
  end loop;
end;
$$;

create or replace function pgvpd_private.sync_role_grants() returns trigger
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    perform pgvpd.grant_protected(null, n.role_name) from new_rows n;
  else
    -- A role deleted and registered again in one statement keeps its grants.
    perform pgvpd_private.revoke_protected(o.role_name) from old_rows o
      where not exists (select 1 from pgvpd_private.app_role a where a.role_name = o.role_name);
  end if;
  return null;
end;
$$;

create or replace trigger sync_role_grants_insert after insert on pgvpd_private.app_role
  referencing new table as new_rows for each statement execute function pgvpd_private.sync_role_grants();
create or replace trigger sync_role_grants_delete after delete on pgvpd_private.app_role
  referencing old table as old_rows for each statement execute function pgvpd_private.sync_role_grants();

--! split: 2-protect.sql
-- protect / unprotect with delegation to pgvpd_admin (see part 1). The note on the policy keeps,
-- besides rls_*_before, column and grants (grants protect made as the owner: before this
-- migration, or when pgvpd_admin cannot reach the schema), what protect delegated:
--   delegated     [{kind, object, privilege, held_before}]: granted to pgvpd_admin WITH GRANT
--                 OPTION; held_before: pgvpd_admin held the privilege without the option already
--   schema_usage  true when protect granted pgvpd_admin USAGE on the table's schema

create or replace function pgvpd.protect(p_table regclass, p_column name default 'tenant_id') returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_class pg_catalog.pg_class;
  v_schema name;
  v_type oid;
  v_note jsonb := pgvpd.protection_note(p_table);
  v_grants jsonb;
  v_delegated jsonb;
  v_admin oid := 'pgvpd_admin'::regrole::oid;
  v_reaches boolean;
  v_expr text;
  v_role name;
  v_priv record;
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
  select n.nspname into v_schema from pg_catalog.pg_namespace n where n.oid = v_class.relnamespace;

  if v_note is null then
    v_note := pg_catalog.jsonb_build_object(
      'rls_enabled_before', v_class.relrowsecurity,
      'rls_forced_before', v_class.relforcerowsecurity,
      'grants', '[]'::jsonb);
  end if;
  v_grants := coalesce(v_note -> 'grants', '[]'::jsonb);
  v_delegated := coalesce(v_note -> 'delegated', '[]'::jsonb);

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

  -- pgvpd_admin grants tenant roles, now and when they are registered later: it must reach the
  -- table by name (USAGE on its schema) and hold each privilege WITH GRANT OPTION.
  if not pg_catalog.has_schema_privilege(v_admin, v_class.relnamespace, 'USAGE')
     and (pg_catalog.pg_has_role((select n.nspowner from pg_catalog.pg_namespace n where n.oid = v_class.relnamespace), 'USAGE')
          or pg_catalog.has_schema_privilege(v_class.relnamespace, 'USAGE WITH GRANT OPTION')) then
    execute pg_catalog.format('grant usage on schema %I to pgvpd_admin', v_schema);
    v_note := v_note || '{"schema_usage": true}'::jsonb;
  end if;
  v_reaches := pg_catalog.has_schema_privilege(v_admin, v_class.relnamespace, 'USAGE');

  if v_reaches and v_class.relowner <> v_admin then
    for v_priv in select * from pgvpd.protected_privileges(p_table) loop
      if not pgvpd.relation_privilege_held(v_priv.object, v_priv.privilege, v_admin, true) then
        v_delegated := v_delegated || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'kind', v_priv.kind, 'object', v_priv.object::oid, 'privilege', v_priv.privilege,
          'held_before', pgvpd.relation_privilege_held(v_priv.object, v_priv.privilege, v_admin, false)));
        execute pg_catalog.format('grant %s on %s %s to pgvpd_admin with grant option',
          v_priv.privilege, v_priv.kind, v_priv.object);
      end if;
    end loop;
  end if;

  v_note := v_note || pg_catalog.jsonb_build_object('column', p_column, 'delegated', v_delegated);
  execute pg_catalog.format('comment on policy pgvpd_tenant_isolation on %s is %L', p_table, 'pgvpd:' || v_note::text);

  if v_reaches then
    perform pgvpd.grant_protected(p_table);
  else
    -- pgvpd_admin cannot reach the table: the owner grants the roles registered now, as before,
    -- and says that roles registered later will not be.
    for v_role in select * from pgvpd.app_roles() loop
      for v_priv in select * from pgvpd.protected_privileges(p_table) loop
        if not pgvpd.relation_privilege_held(v_priv.object, v_priv.privilege,
                                   (select r.oid from pg_catalog.pg_roles r where r.rolname = v_role), false) then
          execute pg_catalog.format('grant %s on %s %s to %I', v_priv.privilege, v_priv.kind, v_priv.object, v_role);
          v_grants := v_grants || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'role', v_role, 'kind', v_priv.kind, 'object', v_priv.object::oid, 'privilege', v_priv.privilege));
        end if;
      end loop;
    end loop;
    v_note := v_note || pg_catalog.jsonb_build_object('grants', v_grants);
    execute pg_catalog.format('comment on policy pgvpd_tenant_isolation on %s is %L', p_table, 'pgvpd:' || v_note::text);
    raise warning using
      message = pg_catalog.format('pgvpd: pgvpd_admin has no USAGE on schema %I, so roles registered later get no privileges on %s', v_schema, p_table),
      hint = pg_catalog.format('grant usage on schema %I to pgvpd_admin, then select pgvpd.protect(%L, %L)', v_schema, p_table::text, p_column);
  end if;
  return pg_catalog.format('%s protected on column %I', p_table, p_column);
end;
$$;

create or replace function pgvpd.unprotect(p_table regclass) returns text
language plpgsql volatile set search_path = ''
as $$
declare
  v_note jsonb := pgvpd.protection_note(p_table);
  v_grant jsonb;
  v_schema oid;
begin
  if v_note is null then
    return pg_catalog.format('%s was not protected by pgvpd', p_table);
  end if;
  -- What protect delegated to pgvpd_admin, and with it (CASCADE) every grant pgvpd_admin made.
  for v_grant in select * from pg_catalog.jsonb_array_elements(coalesce(v_note -> 'delegated', '[]'::jsonb)) loop
    if exists (select 1 from pg_catalog.pg_class c where c.oid = (v_grant ->> 'object')::oid) then
      execute pg_catalog.format('revoke %s%s on %s %s from pgvpd_admin cascade',
        case when (v_grant ->> 'held_before')::boolean then 'grant option for ' else '' end,
        v_grant ->> 'privilege', v_grant ->> 'kind', ((v_grant ->> 'object')::oid)::regclass);
    end if;
  end loop;
  -- What protect granted as the owner.
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
  -- USAGE on the schema, once no table protected there is left.
  select c.relnamespace into v_schema from pg_catalog.pg_class c where c.oid = p_table;
  if coalesce((v_note ->> 'schema_usage')::boolean, false)
     and not exists (
       select 1 from pg_catalog.pg_policy p join pg_catalog.pg_class c on c.oid = p.polrelid
        where p.polname = 'pgvpd_tenant_isolation' and c.relnamespace = v_schema) then
    execute pg_catalog.format('revoke usage on schema %I from pgvpd_admin',
      (select n.nspname from pg_catalog.pg_namespace n where n.oid = v_schema));
  end if;
  return pg_catalog.format('%s unprotected', p_table);
end;
$$;

--! split: 3-lint.sql
-- lint: one more check (the others as in 000008), and no JIT: the planner's row estimates for the
-- set-returning functions lint joins are far too high, and compiling the query cost seconds to
-- save nothing on a few hundred catalog rows.
--   role_missing_grants         a registered tenant role (an application role, so every org's
--                               connect_as role) lacks a privilege protect() grants on a protected
--                               table: its sessions get 42501 where status() says protected. The
--                               fix is grant_protected() when pgvpd_admin may grant everything
--                               missing, else protect() again by the table's owner (after granting
--                               pgvpd_admin USAGE on the table's schema when it lacks it).

create or replace function pgvpd.lint()
returns table (severity text, check_name text, object text, detail text, fix text)
language sql stable set search_path = '' set jit = off
as $$
  with app as (
    select r.oid, r.rolname from pg_catalog.pg_roles r where r.rolname in (select * from pgvpd.app_roles())
  ),
  rls_tables as (
    select c.oid from pg_catalog.pg_class c where c.relrowsecurity and c.relkind in ('r', 'p')
  ),
  protected as (
    select s.table_oid, s.tenant_column from pgvpd.status() s where s.pgvpd_policy
  ),
  guard as (
    -- A module that confines tenant roles: loaded (context_path's check, which a client's own
    -- placeholder cannot fool) and of version 2 or later (version 1 had no confinement).
    select coalesce((select p.module_loaded from pgvpd.context_path() p), false)
           and case when pg_catalog.current_setting('pgvpd.guard', true) ~ '^[0-9]+$'
                    then pg_catalog.current_setting('pgvpd.guard', true)::integer >= 2
                    else false end as loaded
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
  union all
  select case when c.wanted then 'error' else 'warning' end, 'confinement_open', c.facility,
         pg_catalog.format('%s is open to every role%s: tenants sharing a role reach each other through %s',
           c.facility, case when c.wanted then '' else ' (opened with pgvpd.unconfine)' end,
           pg_catalog.array_to_string(c.open_objects, ', ')),
         pg_catalog.format('select pgvpd.confine(%L)', c.facility)
    from pgvpd.confinement() c
   where c.state <> 'confined'
  union all
  select 'warning', 'connect_as_shared', u.role_name::text,
         pg_catalog.format('connect_as role %I serves %s orgs and the guard module is not loaded: a tenant on it can change its password or settings, or lock its tables, for every one of them',
           u.role_name, u.orgs),
         'give each org its own connect_as role (pgvpd user set-connect-as), or load pgvpd_guard (docs/guard.md)'
    from pgvpd.connect_as_roles() u, guard g
   where not g.loaded and u.orgs > 1
  union all
  select 'warning', 'unique_key_without_tenant', i.indexrelid::regclass::text,
         pg_catalog.format('unique index %s on %s does not include tenant column %I: an insert or update that fails with 23505 tells a tenant that another tenant has that value',
           i.indexrelid::regclass, p.table_oid, p.tenant_column),
         pg_catalog.format('make the key (%I, %s) instead', p.tenant_column,
           (select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by k.ord)
              from pg_catalog.unnest(i.indkey::smallint[]) with ordinality k(attnum, ord)
              join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
             where k.ord <= i.indnkeyatts))
    from protected p
    join pg_catalog.pg_index i on i.indrelid = p.table_oid and i.indisunique
   where not exists (
           select 1 from pg_catalog.pg_attribute a
            where a.attrelid = i.indrelid and a.attname = p.tenant_column
              and a.attnum = any (i.indkey::smallint[]))
     and exists (
           -- a key column the client may choose: neither identity nor filled by a default
           select 1 from pg_catalog.unnest(i.indkey::smallint[]) with ordinality k(attnum, ord)
             left join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
            where k.ord <= i.indnkeyatts
              and (k.attnum = 0 or (a.attidentity = '' and not a.atthasdef)))
  union all
  select 'warning', 'lock_without_timeout', a.rolname::text,
         pg_catalog.format('tenant role %I may lock %s protected table(s), e.g. %s, in ACCESS EXCLUSIVE mode, has neither lock_timeout nor statement_timeout of its own, and the guard module is not loaded: one tenant can make every other tenant''s statements on them wait',
           a.rolname, pg_catalog.count(*), pg_catalog.min(p.table_oid::text)),
         pg_catalog.format('alter role %I set lock_timeout = ''5s''; or load pgvpd_guard (docs/guard.md)', a.rolname)
    from app a
    cross join guard g
    join protected p on pg_catalog.has_table_privilege(a.oid, p.table_oid, 'UPDATE, DELETE, TRUNCATE')
   where not g.loaded
     and not exists (
           select 1 from pg_catalog.pg_db_role_setting s
            where s.setrole = a.oid
              and s.setdatabase in (0, (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()))
              and exists (select 1 from pg_catalog.unnest(s.setconfig) x
                           where x ~ '^(lock_timeout|statement_timeout)=' and x !~ '=0$'))
   group by a.rolname
  union all
  select 'error', 'role_missing_grants', pg_catalog.format('%I on %s', m.rolname, m.table_oid),
         pg_catalog.format('tenant role %I lacks %s on protected table %s, which pgvpd.protect grants every registered tenant role: its sessions get 42501 (permission denied)',
           m.rolname,
           pg_catalog.string_agg(case when m.kind = 'table' then m.privilege
                                      else m.privilege || ' on sequence ' || m.object::text end, ', '
                                 order by m.kind desc, m.object::text,
                                          pg_catalog.array_position(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'USAGE'], m.privilege)),
           m.table_oid),
         case when pg_catalog.bool_and(m.admin_holds) and m.admin_reaches
              then pg_catalog.format('select pgvpd.grant_protected(%L)', m.table_oid)
              when m.admin_reaches
              then pg_catalog.format('select pgvpd.protect(%L, %L)', m.table_oid, m.tenant_column)
              else pg_catalog.format('grant usage on schema %I to pgvpd_admin; select pgvpd.protect(%L, %L)',
                     m.nspname, m.table_oid, m.tenant_column) end
    from (
      select a.rolname, p.table_oid, p.tenant_column, x.kind, x.object, x.privilege, n.nspname,
             pgvpd.relation_privilege_held(x.object, x.privilege, 'pgvpd_admin'::regrole, true) as admin_holds,
             pg_catalog.has_schema_privilege('pgvpd_admin'::regrole, n.oid, 'USAGE') as admin_reaches
        from app a
        cross join protected p
        join pg_catalog.pg_class c on c.oid = p.table_oid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        cross join lateral pgvpd.protected_privileges(p.table_oid) x
       where a.rolname not in ('pgvpd_admin', 'pgvpd_proxy')
         and not case when x.kind = 'table' then pg_catalog.has_table_privilege(a.oid, x.object, x.privilege)
                      else pg_catalog.has_sequence_privilege(a.oid, x.object, x.privilege) end
    ) m
   group by m.rolname, m.table_oid, m.tenant_column, m.nspname, m.admin_reaches
$$;

--! split: 4-privileges.sql
-- Ownership and EXECUTE for what this migration made (as 000008's 7-privileges). Before part 5:
-- grant_protected must run as pgvpd_admin, the grantor that revoke_protected and unprotect know.

do $$
declare
  v_obj record;
begin
  for v_obj in
    select 'function' as kind, p.oid::regprocedure::text as name
      from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('pgvpd', 'pgvpd_private') and p.proowner <> 'pgvpd_admin'::regrole
    union all
    select 'table', c.oid::regclass::text
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('pgvpd', 'pgvpd_private') and c.relkind in ('r', 'p', 'v', 'S')
       and c.relowner <> 'pgvpd_admin'::regrole
  loop
    execute format('alter %s %s owner to pgvpd_admin', v_obj.kind, v_obj.name);
  end loop;
end;
$$;

revoke all on all functions in schema pgvpd_private from public;
-- protect() runs with its caller's rights and calls grant_protected(); lint() reads the others.
-- grant_protected() grants only what part 1 says, so anyone may ask for it.
grant execute on function
  pgvpd.protected_privileges(regclass), pgvpd.relation_privilege_held(regclass, text, oid, boolean),
  pgvpd.grant_protected(regclass, name)
  to public;

--! split: 5-tables-protected-before.sql
-- Tables protected before this migration: protect() again (as the superuser running setup, so as
-- each table's owner) delegates to pgvpd_admin and grants the roles registered since. Only tables
-- whose note has no delegation record yet, so that running setup again locks no table; then
-- grant_protected() for any role registered while pgvpd_admin could not reach a table.

do $$
declare
  v_table record;
begin
  for v_table in
    select s.table_oid, s.tenant_column from pgvpd.status() s
     where s.pgvpd_policy and s.tenant_column <> '?' and not (pgvpd.protection_note(s.table_oid) ? 'delegated')
  loop
    perform pgvpd.protect(v_table.table_oid, v_table.tenant_column);
  end loop;
  perform pgvpd.grant_protected();
end;
$$;
