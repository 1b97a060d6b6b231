--! Previous: sha1:9a44d792e273647e29cf8c73a972da82d1678198
--! Hash: sha1:dd6505dc1fcdd91972423b75eeaf5dc2a88fdcc0
--! Message: tenant confinement

--! split: 1-tenant-roles.sql
-- Tenant confinement (issue 11): what a tenant's session can do in PostgreSQL stays inside its
-- tenant. Five parts:
--   1. tenant roles the database knows: a context is issued only for a backend whose role is
--      registered for the proxy's mode (issue_context: application roles; issue_org_context: the
--      org user's connect_as role), never for a superuser, a BYPASSRLS role, pgvpd's own roles or
--      a member of one; the check reads the backend's role from the server, not the proxy's word;
--   2. pgvpd_tenant, a marker role every registered tenant role is a member of, so that the guard
--      module (extension/pgvpd_guard.c) can tell a tenant role in any database of the cluster;
--   3. confinement of PostgreSQL's own facilities that reach across sessions of one role: other
--      sessions' activity, signals, large objects (revoked from PUBLIC in this database, granted
--      back to the roles that need them, recorded, reported, reversible);
--   4. catalog notifications without org ids or names;
--   5. a secret shared by every proxy of the catalog, for the mock salts of unknown users.

-- Part 1, tenant roles.
-- Why: app mode issued a context for whatever role the client logged in as, so an org user who
-- set a password on its connect_as role could log in to the app-mode proxy as
-- <connect_as>.<another org's id> and read that org's rows; and `postgres.<tenant>` got a context
-- on a superuser session. Each mode now names what it issues for, and the database checks the
-- backend's session role (pg_stat_get_activity) against its own registry.
-- Guarantees: a refusal is SQLSTATE 28000 and writes no record; the check runs before issue(),
-- so nothing is signed for a refused backend. A pid that is no client backend of this database
-- is left to issue(), which refuses it with 22023 as before.

-- Why a backend's session role may not carry a context in this mode, or NULL when it may.
-- p_org NULL: app mode (a registered application role that is no org's connect_as role);
-- otherwise org mode (the connect_as role of user p_user in active org p_org; in a dedicated
-- database that does not hold the catalog, a role registered there).
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
   where (x.rolsuper or x.rolbypassrls or x.rolname in ('pgvpd_admin', 'pgvpd_proxy'))
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

-- The shared part of both modes, after the role check: pruning now and then, the resolvers, issue().
create or replace function pgvpd_private.issue_checked(p_pid integer, p_org uuid, p_tenant text, p_user text, p_vals jsonb)
returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_problem text := pgvpd_private.tenant_role_problem(p_pid, p_org, p_user);
begin
  if v_problem is not null then
    raise exception using errcode = '28000',
      message = pg_catalog.format('pgvpd: no context for backend %s: %s', p_pid, v_problem),
      hint = case when p_org is null
                  then 'app mode serves registered application roles (pgvpd.add_app_role) that are NOSUPERUSER NOBYPASSRLS, members of no such role, and no org''s connect_as role'
                  else 'org mode serves each org user''s connect_as role, which must be NOSUPERUSER NOBYPASSRLS and a member of no such role' end;
  end if;
  if pg_catalog.random() < 0.01 then
    perform pgvpd.prune_contexts();
  end if;
  if exists (select 1 from pgvpd_private.resolvers) then
    return pgvpd_private.issue(p_pid, p_tenant, p_user, pgvpd_private.run_resolvers(p_tenant, p_user, p_vals));
  end if;
  return pgvpd_private.issue(p_pid, p_tenant, p_user, p_vals);
end;
$$;

-- App mode: tenant p_tenant on a backend of a registered application role. Same signature and
-- EXECUTE (pgvpd_proxy) as before.
create or replace function pgvpd.issue_context(p_backend_pid integer, p_tenant text, p_user text default null, p_vals jsonb default '{}'::jsonb)
returns text
language sql volatile security definer set search_path = ''
as $$
  select pgvpd_private.issue_checked(p_backend_pid, null, p_tenant, p_user, p_vals)
$$;

-- Org mode: org p_org (the context's tenant is the org id) and its user p_user, on a backend of
-- that user's connect_as role.
create or replace function pgvpd.issue_org_context(p_backend_pid integer, p_org uuid, p_user text, p_vals jsonb default '{}'::jsonb)
returns text
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if p_org is null or p_user is null then
    raise exception using errcode = '22023', message = 'pgvpd: issue_org_context needs an org and a user';
  end if;
  return pgvpd_private.issue_checked(p_backend_pid, p_org, p_org::text, p_user, p_vals);
end;
$$;

--! split: 2-tenant-marker.sql
-- Why: the guard module refuses ALTER ROLE on tenant roles and strong explicit locks by them
-- (docs/guard.md). ALTER ROLE is cluster-wide and can be run from any database, so the module
-- needs a cluster-wide mark: membership in pgvpd_tenant, a NOLOGIN role with no privileges.
-- Every role entered in pgvpd_private.app_role (operators' application roles, and the orgs'
-- connect_as roles) is made a member. The mark is never taken away automatically: the registry
-- is per database and another database of the cluster may still count the role as a tenant; an
-- operator who retires a tenant role for good runs `revoke pgvpd_tenant from <role>`.
-- pgvpd_admin holds ADMIN OPTION on it (so that its definer functions can grant it), which makes
-- it a member too: the module does not count members of pgvpd_admin as tenant roles.

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = 'pgvpd_tenant') then
    begin
      create role pgvpd_tenant nologin noinherit nosuperuser nobypassrls nocreatedb nocreaterole;
    exception when duplicate_object or unique_violation then
      null; -- created meanwhile by a setup running in another database of this cluster
    end;
  end if;
end;
$$;
grant pgvpd_tenant to pgvpd_admin with admin option;

create or replace function pgvpd_private.mark_tenant_role(p_role name) returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_oid oid;
begin
  select r.oid into v_oid from pg_catalog.pg_roles r where r.rolname = p_role;
  if v_oid is null or p_role in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_tenant') then
    return;
  end if;
  if not exists (
    select 1 from pg_catalog.pg_auth_members m where m.roleid = 'pgvpd_tenant'::regrole and m.member = v_oid
  ) then
    execute pg_catalog.format('grant pgvpd_tenant to %I', p_role);
  end if;
end;
$$;

create or replace function pgvpd_private.sync_tenant_marker() returns trigger
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.mark_tenant_role(n.role_name) from new_rows n;
  return null;
end;
$$;

create or replace trigger sync_tenant_marker_insert after insert on pgvpd_private.app_role
  referencing new table as new_rows for each statement execute function pgvpd_private.sync_tenant_marker();

-- Roles registered before this migration.
do $$
begin
  perform pgvpd_private.mark_tenant_role(a.role_name) from pgvpd_private.app_role a;
end;
$$;

--! split: 3-confinement.sql
-- Why: tenants that share a role (app_user in app mode, a connect_as role in org mode) are one
-- role to PostgreSQL, and PostgreSQL lets a role see and touch its own other sessions: the query
-- text of each other's running and last statements (pg_stat_activity, pg_stat_get_activity, the
-- pg_stat_get_backend_* functions), pg_cancel_backend / pg_terminate_backend on each other's
-- backends, and large objects (owned by the shared role, listed in pg_largeobject_metadata).
-- Confinement revokes those privileges from PUBLIC in this database and grants them back to the
-- roles that need them: pgvpd_admin (pgvpd's own definer functions), pgvpd_proxy,
-- pg_read_all_stats (monitoring: pg_monitor is a member) for activity, pg_signal_backend for
-- signals. Superusers are unaffected. Each facility can be opened again (pgvpd.unconfine) and
-- closed again (pgvpd.confine); setup keeps what the operator chose.
-- Guarantees: exactly what confine() revoked or granted is recorded and unconfine() reverts that
-- and nothing else; pgvpd.confinement() reports each facility from the live privileges, so a grant
-- made by hand since shows up; lint() reports an open facility.

create table if not exists pgvpd_private.confinement (
  facility text primary key check (facility in ('activity', 'signals', 'large_objects')),
  wanted boolean not null default true,
  changed_at timestamptz not null default pg_catalog.clock_timestamp()
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.confinement', '');
insert into pgvpd_private.confinement (facility) values ('activity'), ('signals'), ('large_objects')
on conflict do nothing;

-- What confine() changed: a privilege revoked from PUBLIC, or granted to a role.
create table if not exists pgvpd_private.confinement_change (
  facility text not null,
  kind text not null check (kind in ('function', 'table')),
  object text not null,
  privilege text not null,
  change text not null check (change in ('revoked from public', 'granted')),
  role_name name not null,
  primary key (object, privilege, change, role_name)
);

-- The objects of each facility on this server version, with the roles that keep the privilege.
create or replace function pgvpd_private.confinement_objects()
returns table (facility text, kind text, object text, privilege text, keep name[])
language sql stable set search_path = ''
as $$
  select 'activity', 'table', 'pg_catalog.pg_stat_activity', 'SELECT',
         array['pgvpd_admin', 'pgvpd_proxy', 'pg_read_all_stats']::name[]
  union all
  select case when p.proname in ('pg_terminate_backend', 'pg_cancel_backend') then 'signals'
              when p.proname like 'lo\_%' or p.proname in ('loread', 'lowrite') then 'large_objects'
              else 'activity' end,
         'function',
         'pg_catalog.' || p.oid::pg_catalog.regprocedure::text, -- unqualified: pg_catalog is always searched
         'EXECUTE',
         case when p.proname in ('pg_terminate_backend', 'pg_cancel_backend')
                then array['pgvpd_admin', 'pg_signal_backend']::name[]
              when p.proname like 'lo\_%' or p.proname in ('loread', 'lowrite')
                then array['pgvpd_admin']::name[]
              else array['pgvpd_admin', 'pgvpd_proxy', 'pg_read_all_stats']::name[] end
    from pg_catalog.pg_proc p
   where p.pronamespace = 'pg_catalog'::regnamespace
     and (p.proname in ('pg_stat_get_activity', 'pg_terminate_backend', 'pg_cancel_backend', 'loread', 'lowrite')
          or p.proname like 'pg\_stat\_get\_backend\_%' or p.proname like 'lo\_%')
  union all
  select 'large_objects', 'table', 'pg_catalog.pg_largeobject_metadata', 'SELECT', array['pgvpd_admin']::name[]
$$;

create or replace function pgvpd_private.public_has(p_kind text, p_object text, p_privilege text) returns boolean
language sql stable set search_path = ''
as $$
  select case p_kind when 'table' then pg_catalog.has_table_privilege('public', p_object, p_privilege)
                     else pg_catalog.has_function_privilege('public', p_object, p_privilege) end
$$;

-- Whether the role holds the privilege by a grant of its own (not through PUBLIC or membership).
create or replace function pgvpd_private.holds_directly(p_kind text, p_object text, p_privilege text, p_role name)
returns boolean
language sql stable set search_path = ''
as $$
  select exists (
    select 1 from pg_catalog.pg_proc p,
           pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) x
     where p_kind = 'function' and p.oid = pg_catalog.to_regprocedure(p_object)
       and x.grantee = (select r.oid from pg_catalog.pg_roles r where r.rolname = p_role)
       and x.privilege_type = p_privilege
    union all
    select 1 from pg_catalog.pg_class c,
           pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) x
     where p_kind = 'table' and c.oid = pg_catalog.to_regclass(p_object)
       and x.grantee = (select r.oid from pg_catalog.pg_roles r where r.rolname = p_role)
       and x.privilege_type = p_privilege)
$$;

-- Refuses a caller that is not a superuser (42501) and a facility that does not exist (22023).
create or replace function pgvpd_private.confinement_may_change(p_fn text, p_facility text) returns void
language plpgsql stable set search_path = ''
as $$
begin
  if not exists (select 1 from pg_catalog.pg_roles r where r.rolname = current_user and r.rolsuper) then
    raise exception using errcode = '42501', message = pg_catalog.format('pgvpd: %s() must be run by a superuser', p_fn),
      hint = 'it changes privileges on system objects, which only their owner may do';
  end if;
  if p_facility is not null and not exists (select 1 from pgvpd_private.confinement c where c.facility = p_facility) then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: no confinement facility %L', p_facility),
      hint = 'facilities: activity, signals, large_objects';
  end if;
end;
$$;

-- Closes the named facility (or all, with NULL) and remembers that the operator wants it closed.
-- Revoking privileges on system objects needs their owner: a superuser runs this (setup does).
create or replace function pgvpd.confine(p_facility text default null) returns integer
language plpgsql volatile set search_path = ''
as $$
declare
  v_obj record;
  v_role name;
  v_count integer := 0;
begin
  perform pgvpd_private.confinement_may_change('confine', p_facility);
  update pgvpd_private.confinement c set wanted = true, changed_at = pg_catalog.clock_timestamp()
   where p_facility is null or c.facility = p_facility;
  for v_obj in select o.* from pgvpd_private.confinement_objects() o
                where p_facility is null or o.facility = p_facility loop
    -- Roles that keep the privilege first, so that pgvpd's own functions never lose it.
    foreach v_role in array v_obj.keep loop
      if exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_role)
         and not pgvpd_private.holds_directly(v_obj.kind, v_obj.object, v_obj.privilege, v_role) then
        execute pg_catalog.format('grant %s on %s %s to %I', v_obj.privilege, v_obj.kind, v_obj.object, v_role);
        insert into pgvpd_private.confinement_change values (v_obj.facility, v_obj.kind, v_obj.object, v_obj.privilege, 'granted', v_role)
        on conflict do nothing;
      end if;
    end loop;
    if pgvpd_private.public_has(v_obj.kind, v_obj.object, v_obj.privilege) then
      execute pg_catalog.format('revoke %s on %s %s from public', v_obj.privilege, v_obj.kind, v_obj.object);
      insert into pgvpd_private.confinement_change values (v_obj.facility, v_obj.kind, v_obj.object, v_obj.privilege, 'revoked from public', 'public')
      on conflict do nothing;
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end;
$$;

-- Opens the named facility (or all) again: exactly what confine() changed is reverted.
create or replace function pgvpd.unconfine(p_facility text default null) returns integer
language plpgsql volatile set search_path = ''
as $$
declare
  v_change pgvpd_private.confinement_change;
  v_count integer := 0;
begin
  perform pgvpd_private.confinement_may_change('unconfine', p_facility);
  update pgvpd_private.confinement c set wanted = false, changed_at = pg_catalog.clock_timestamp()
   where p_facility is null or c.facility = p_facility;
  for v_change in delete from pgvpd_private.confinement_change c
                   where p_facility is null or c.facility = p_facility returning c.* loop
    -- An object gone with a server upgrade has nothing left to revert.
    continue when (v_change.kind = 'function' and pg_catalog.to_regprocedure(v_change.object) is null)
               or (v_change.kind = 'table' and pg_catalog.to_regclass(v_change.object) is null);
    if v_change.change = 'revoked from public' then
      execute pg_catalog.format('grant %s on %s %s to public', v_change.privilege, v_change.kind, v_change.object);
      v_count := v_count + 1;
    elsif exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_change.role_name) then
      execute pg_catalog.format('revoke %s on %s %s from %I', v_change.privilege, v_change.kind, v_change.object, v_change.role_name);
    end if;
  end loop;
  return v_count;
end;
$$;

-- One row per facility: whether the operator wants it closed, whether it is, and what PUBLIC
-- can still use (from the live privileges).
create or replace function pgvpd.confinement()
returns table (facility text, wanted boolean, state text, open_objects text[])
language sql stable security definer set search_path = ''
as $$
  select c.facility, c.wanted,
         case when o.open = 0 then 'confined' else 'open' end,
         o.names
    from pgvpd_private.confinement c
    cross join lateral (
      select pg_catalog.count(*) filter (where x.open) as open, pg_catalog.count(*) as total,
             coalesce(pg_catalog.array_agg(x.object order by x.object) filter (where x.open), '{}') as names
        from (select b.object, pgvpd_private.public_has(b.kind, b.object, b.privilege) as open
                from pgvpd_private.confinement_objects() b where b.facility = c.facility) x
    ) o
   order by c.facility
$$;

-- Setup keeps what the operator chose: each facility wanted closed is closed (again).
do $$
declare
  v_facility text;
begin
  for v_facility in select c.facility from pgvpd_private.confinement c where c.wanted order by 1 loop
    perform pgvpd.confine(v_facility);
  end loop;
end;
$$;

--! split: 4-notify-without-ids.sql
-- Why: any role that can connect may LISTEN pgvpd_catalog; the payload named the changed org's id,
-- which a tenant could then put in an app-mode username. The proxies reload the whole snapshot
-- on any notification (pgvpd.catalog_snapshot, EXECUTE for pgvpd_proxy only), so the payload now
-- says nothing: one notification per statement that changes the catalog, with an empty payload
-- (PostgreSQL folds identical notifications of one transaction into one).

create or replace function pgvpd_private.notify_catalog() returns trigger
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_changed boolean := tg_op = 'TRUNCATE';
begin
  -- A statement that changed no row (an UPDATE that matched nothing) tells nobody anything.
  -- Each branch names only the transition table its event has.
  if tg_op = 'INSERT' then
    v_changed := exists (select 1 from new_rows);
  elsif tg_op in ('UPDATE', 'DELETE') then
    v_changed := exists (select 1 from old_rows);
  end if;
  if v_changed then
    perform pg_catalog.pg_notify('pgvpd_catalog', '');
  end if;
  return null;
end;
$$;

--! split: 5-mock-secret.sql
-- Why: an unknown user gets a mock SCRAM exchange whose salt is derived from its name and a
-- secret. With a secret per proxy process, two proxies of one catalog gave an unknown user two
-- salts and a known user one, so comparing them told whether a user exists. The secret now lives
-- in the catalog, made once per database, and reaches the proxies in the catalog snapshot.

create table if not exists pgvpd_private.proxy_secret (
  only_row boolean primary key default true check (only_row),
  mock_secret bytea not null check (pg_catalog.octet_length(mock_secret) = 32)
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.proxy_secret', '');
insert into pgvpd_private.proxy_secret (mock_secret) values (pgvpd_private.random_bytes(32))
on conflict (only_row) do nothing;

create or replace function pgvpd.catalog_snapshot() returns jsonb
language sql stable security definer set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'servers', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'name', s.name, 'host', s.host, 'port', s.port, 'tls', s.tls) order by s.name)
        from pgvpd_private.servers s), '[]'::jsonb),
    'orgs', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'id', o.id, 'database_name', o.database_name, 'status', o.status, 'placement', o.placement,
               'server', o.server_name, 'target_database', o.target_database) order by o.database_name)
        from pgvpd_private.orgs o), '[]'::jsonb),
    'users', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'org_id', u.org_id, 'username', u.username, 'verifier', u.scram_verifier,
               'connect_as', u.connect_as) order by u.org_id, u.username)
        from pgvpd_private.org_users u), '[]'::jsonb),
    'mock_secret', (select pg_catalog.encode(p.mock_secret, 'hex') from pgvpd_private.proxy_secret p))
$$;

--! split: 6-lint.sql
-- lint() as in 000001, plus:
--   confinement_open            a confinement facility is open to PUBLIC (error; a warning when
--                               the operator opened it with pgvpd.unconfine)
--   connect_as_shared           without the guard module, orgs share a connect_as role: a tenant
--                               can change that role's password or settings, or lock its tables,
--                               for every org on it
--   unique_key_without_tenant   a unique index on a protected table leaves out the tenant column:
--                               a 23505 tells a tenant that another tenant has the value. Keys
--                               whose every column the database fills (identity, or a default
--                               such as nextval or gen_random_uuid) are left out: the value is not
--                               the tenant's to choose, so the oracle tells nothing worth a warning
--   lock_without_timeout        without the guard module, a tenant role may lock a protected
--                               table in ACCESS EXCLUSIVE mode (it has UPDATE, DELETE or TRUNCATE)
--                               and has neither lock_timeout nor statement_timeout of its own

-- Each connect_as role and how many orgs it serves (lint reads it; it runs with its caller's rights).
create or replace function pgvpd.connect_as_roles() returns table (role_name name, orgs integer)
language sql stable security definer set search_path = ''
as $$
  select u.connect_as, pg_catalog.count(distinct u.org_id)::integer
    from pgvpd_private.org_users u group by u.connect_as order by 1
$$;

create or replace function pgvpd.lint()
returns table (severity text, check_name text, object text, detail text, fix text)
language sql stable set search_path = ''
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
$$;

--! split: 7-privileges.sql
-- Ownership and EXECUTE for what this migration made (as 000005's 7-privileges).

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
revoke all on all tables in schema pgvpd_private from public;
revoke all on function
  pgvpd.issue_context(integer, text, text, jsonb), pgvpd.issue_org_context(integer, uuid, text, jsonb),
  pgvpd.confine(text), pgvpd.unconfine(text), pgvpd.confinement(), pgvpd.connect_as_roles(),
  pgvpd.catalog_snapshot()
  from public;
grant execute on function
  pgvpd.issue_context(integer, text, text, jsonb), pgvpd.issue_org_context(integer, uuid, text, jsonb),
  pgvpd.catalog_snapshot()
  to pgvpd_proxy;
-- status and lint read it; it tells which facilities are open, nothing of any tenant.
grant execute on function pgvpd.confinement(), pgvpd.connect_as_roles() to public;
