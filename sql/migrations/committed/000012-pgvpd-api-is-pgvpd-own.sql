--! Previous: sha1:fe8bcde25c0f879887467d0eb2d0372c2f519322
--! Hash: sha1:0f4919ee6203591e42666ecd9dd026c0e0c60657
--! Message: pgvpd api is pgvpd own

--! split: 1-connect-as.sql
-- pgvpd_api, the HTTP control plane's role (000011), is one of pgvpd's own roles, as pgvpd_admin
-- and pgvpd_proxy are. Four parts: connect_as roles (this part), the issue-time check of a tenant
-- backend's role (part 2), the tenant marker and protect()'s grants (part 3), lint (part 4); each
-- function is its latest definition with only the list of pgvpd's own roles changed.
-- Why: 000011 added pgvpd_api without adding it where pgvpd names its own roles, so a member of
-- pgvpd_api could be an org's connect_as role or a registered application role, and every
-- tenant session on it could call the control plane's functions (pgvpd.api_*, invite_redeem)
-- directly, past the HTTP server's rate limits and request log; each still wants a token or an
-- invite, but guessing them is what those limits are for.
-- Guarantees: check_connect_as refuses pgvpd_api and every role that is a member of it, directly
-- or through other roles and whatever INHERIT says, with 42501 and the messages it gives for
-- pgvpd_proxy (`pgvpd: connect_as role %I is one of pgvpd's own roles`, `... is a member of %I,
-- which is one of pgvpd's own roles`); so do user_add, user_set_connect_as, org_allow_role,
-- invite_create and the pgvpd.api_* functions that call it. Users added before this migration
-- are not checked again: lint's app_role_pgvpd_member (part 4) reports their roles.

create or replace function pgvpd_private.check_connect_as(p_role name) returns void
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_role pg_catalog.pg_roles;
  v_via record;
  v_hint text := 'connect_as roles must be LOGIN NOSUPERUSER NOBYPASSRLS and members of no such role: '
                 'row-level security must apply to them';
begin
  select r.* into v_role from pg_catalog.pg_roles r where r.rolname = p_role;
  if not found then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: connect_as role %I does not exist', p_role),
      hint = 'create the role first; pgvpd never creates or drops connect_as roles';
  end if;
  if not v_role.rolcanlogin then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: connect_as role %I cannot log in', p_role),
      hint = pg_catalog.format('alter role %I login', p_role);
  end if;
  if v_role.rolsuper then
    raise exception using errcode = '42501', message = pg_catalog.format('pgvpd: connect_as role %I is a superuser', p_role),
      hint = v_hint;
  end if;
  if v_role.rolbypassrls then
    raise exception using errcode = '42501', message = pg_catalog.format('pgvpd: connect_as role %I has BYPASSRLS', p_role),
      hint = v_hint;
  end if;
  if p_role in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api') then
    raise exception using errcode = '42501',
      message = pg_catalog.format('pgvpd: connect_as role %I is one of pgvpd''s own roles', p_role), hint = v_hint;
  end if;
  -- Every role p_role is a member of, directly or through others, nearest first. Membership
  -- counts whatever its INHERIT option: a member may SET ROLE.
  with recursive up (oid, depth) as (
    select m.roleid, 1 from pg_catalog.pg_auth_members m where m.member = v_role.oid
    union
    select m.roleid, up.depth + 1 from pg_catalog.pg_auth_members m join up on m.member = up.oid
     where up.depth < 64
  )
  select r.rolname, r.rolsuper, r.rolbypassrls into v_via
    from up join pg_catalog.pg_roles r on r.oid = up.oid
   where r.rolsuper or r.rolbypassrls or r.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api')
   order by up.depth, r.rolname
   limit 1;
  if found then
    raise exception using errcode = '42501',
      message = pg_catalog.format('pgvpd: connect_as role %I is a member of %I, which %s', p_role, v_via.rolname,
        case when v_via.rolsuper then 'is a superuser'
             when v_via.rolbypassrls then 'has BYPASSRLS'
             else 'is one of pgvpd''s own roles' end),
      hint = v_hint;
  end if;
end;
$$;

--! split: 2-tenant-role-problem.sql
-- Part 2: a backend whose session role is pgvpd_api or a member of it gets no context.
-- Why: issue_context and issue_org_context check the backend's own role against pgvpd's own roles
-- (000008, part 1) so that a context is never issued for a session that holds pgvpd's rights;
-- pgvpd_api's rights are pgvpd's too.
-- Guarantees: such a backend is refused with 28000 `pgvpd: no context for backend <pid>: role
-- <r> is one of pgvpd's own roles` or `... is a member of pgvpd_api, which is one of pgvpd's own
-- roles`, before anything is signed or recorded, in app mode and in org mode alike.

create or replace function pgvpd_private.tenant_role_problem(p_pid integer, p_org uuid, p_user text)
returns text
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_role oid;
  v_name name;
  v_via record;
begin
  select a.usesysid into v_role from pg_catalog.pg_stat_get_activity(p_pid) a
   where a.backend_type = 'client backend';
  if v_role is null then
    return null;
  end if;
  select r.rolname into v_name from pg_catalog.pg_roles r where r.oid = v_role;
  -- The role itself or any role it is a member of (whatever INHERIT says: a member may SET ROLE).
  select x.rolname, x.rolsuper, x.rolbypassrls, x.oid = v_role as itself into v_via
    from pg_catalog.pg_roles x
   where (x.rolsuper or x.rolbypassrls or x.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api'))
     and pg_catalog.pg_has_role(v_role, x.oid, 'MEMBER')
   order by x.oid = v_role desc, x.rolname
   limit 1;
  if found then
    return pg_catalog.format('role %I %s', v_name,
      case when v_via.itself and v_via.rolsuper then 'is a superuser'
           when v_via.itself and v_via.rolbypassrls then 'has BYPASSRLS'
           when v_via.itself then 'is one of pgvpd''s own roles'
           else pg_catalog.format('is a member of %I, which %s', v_via.rolname,
                  case when v_via.rolsuper then 'is a superuser'
                       when v_via.rolbypassrls then 'has BYPASSRLS'
                       else 'is one of pgvpd''s own roles' end) end);
  end if;
  if p_org is null then
    if not exists (select 1 from pgvpd_private.app_role a where a.role_name = v_name) then
      return pg_catalog.format('role %I is not a registered application role', v_name);
    end if;
    if exists (select 1 from pgvpd_private.org_users u where u.connect_as = v_name) then
      return pg_catalog.format('role %I is an org''s connect_as role, served in org mode only', v_name);
    end if;
  elsif exists (select 1 from pgvpd_private.orgs o where o.id = p_org) then
    if not exists (
      select 1 from pgvpd_private.org_users u join pgvpd_private.orgs o on o.id = u.org_id
       where u.org_id = p_org and u.username = p_user and u.connect_as = v_name and o.status = 'active'
    ) then
      return pg_catalog.format('role %I is not the connect_as role of user %L in active org %s', v_name, p_user, p_org);
    end if;
  -- A dedicated database whose catalog lives elsewhere knows no org: its connect_as role must be
  -- registered here (pgvpd.add_app_role), as the dedicated placement's setup does.
  elsif not exists (select 1 from pgvpd_private.app_role a where a.role_name = v_name) then
    return pg_catalog.format('role %I is not registered in this database, which does not catalog org %s', v_name, p_org);
  end if;
  return null;
end;
$$;

--! split: 3-marker-and-grants.sql
-- Part 3: pgvpd_api registered as an application role by mistake is neither marked as a tenant
-- role nor granted the protected tables.
-- Why: mark_tenant_role (000008, part 2) and grant_protected (000009, part 1) skip pgvpd's own
-- roles, so that a registration lint reports as an error (app_role_pgvpd_member) does not also
-- make the guard module treat the role, and the HTTP server's login with it, as a tenant, nor
-- give it tenant rows' privileges.
-- Guarantees: pgvpd never makes pgvpd_api a member of pgvpd_tenant, and never grants it a
-- privilege on a protected table; a mark made before this migration stays (marks are never taken
-- away automatically; `revoke pgvpd_tenant from pgvpd_api` takes it).

create or replace function pgvpd_private.mark_tenant_role(p_role name) returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_oid oid;
begin
  select r.oid into v_oid from pg_catalog.pg_roles r where r.rolname = p_role;
  if v_oid is null or p_role in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api', 'pgvpd_tenant') then
    return;
  end if;
  if not exists (
    select 1 from pg_catalog.pg_auth_members m where m.roleid = 'pgvpd_tenant'::regrole and m.member = v_oid
  ) then
    execute pg_catalog.format('grant pgvpd_tenant to %I', p_role);
  end if;
end;
$$;

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
           and r.rolname not in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api')
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

--! split: 4-lint.sql
-- Part 4: lint counts pgvpd_api among pgvpd's own roles (the other checks as in 000009).
-- Why: an application role (so every org's connect_as role) that is a member of pgvpd_api holds
-- the control plane's rights in every tenant's session; one registered before this migration was
-- never refused.
-- Guarantees:
--   app_role_pgvpd_member       an application role is pgvpd_admin, pgvpd_proxy or pgvpd_api, or
--                               a member of one (an error, as for the other two);
--   role_missing_grants         does not expect grants for pgvpd_api, which grant_protected skips
--                               (part 3).

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
    join pg_catalog.pg_roles x on x.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api') and pg_catalog.pg_has_role(a.oid, x.oid, 'MEMBER')
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
       where a.rolname not in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api')
         and not case when x.kind = 'table' then pg_catalog.has_table_privilege(a.oid, x.object, x.privilege)
                      else pg_catalog.has_sequence_privilege(a.oid, x.object, x.privilege) end
    ) m
   group by m.rolname, m.table_oid, m.tenant_column, m.nspname, m.admin_reaches
$$;
