--! Previous: sha1:4ef393c1c12af7696e97bbb03843c72e447526b9
--! Hash: sha1:f3a3a8447f59d9df4ae6b652d3d1aec91d246d10
--! Message: org catalog

--! split: 1-servers.sql
-- The org catalog, part 1: servers (docs/architecture.md §5, §6).
-- Why: in org mode the proxy routes each org to a database on some PostgreSQL server; the catalog
-- names those servers once, and orgs refer to them by name. The built-in server `default` means
-- "the proxy's own upstream": its host and port are NULL, and the proxy uses its own settings
-- (its tls, 'disable', means nothing).
-- Guarantees: server names match ^[a-z0-9][a-z0-9_-]{0,62}$; every server but `default` has a host
-- and a port in 1..65535; every server has a tls mode (disable, require, verify-full); `default`
-- always exists; a server that still holds an org cannot be removed. Writes go through SECURITY
-- DEFINER functions that only pgvpd_admin may execute.

create table if not exists pgvpd_private.servers (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  host text check (host ~ '^[^[:cntrl:][:space:]]{1,255}$'),
  port integer check (port between 1 and 65535),
  tls text not null default 'disable' check (tls in ('disable', 'require', 'verify-full')),
  created_at timestamptz not null default pg_catalog.clock_timestamp(),
  constraint servers_default_has_no_address check (
    case when name = 'default' then host is null and port is null
         else host is not null and port is not null end)
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.servers', 'where name <> ''default''');

insert into pgvpd_private.servers (name) values ('default') on conflict do nothing;

-- 42704 when the server does not exist; used by every function that takes a server name.
create or replace function pgvpd_private.server_must_exist(p_name text) returns void
language plpgsql stable security definer set search_path = ''
as $$
begin
  if not exists (select 1 from pgvpd_private.servers s where s.name = p_name) then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no server %L', p_name);
  end if;
end;
$$;

create or replace function pgvpd.server_add(p_name text, p_host text, p_port integer default 5432, p_tls text default 'disable')
returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if p_name is null or p_name !~ '^[a-z0-9][a-z0-9_-]{0,62}$' then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: invalid server name %L', p_name),
      hint = 'server names match ^[a-z0-9][a-z0-9_-]{0,62}$';
  end if;
  if p_host is null or p_host !~ '^[^[:cntrl:][:space:]]{1,255}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: host must be 1 to 255 characters without spaces or control characters';
  end if;
  if p_port is null or p_port not between 1 and 65535 then
    raise exception using errcode = '22023', message = 'pgvpd: port must be between 1 and 65535';
  end if;
  if p_tls is null or p_tls not in ('disable', 'require', 'verify-full') then
    raise exception using errcode = '22023', message = 'pgvpd: tls must be disable, require or verify-full';
  end if;
  -- Checked before the insert, whose constraints would otherwise refuse `default` less clearly.
  if exists (select 1 from pgvpd_private.servers s where s.name = p_name) then
    raise exception using errcode = '23505', message = pg_catalog.format('pgvpd: server %L already exists', p_name);
  end if;
  begin
    insert into pgvpd_private.servers (name, host, port, tls) values (p_name, p_host, p_port, p_tls);
  exception when unique_violation then
    raise exception using errcode = '23505', message = pg_catalog.format('pgvpd: server %L already exists', p_name);
  end;
end;
$$;

create or replace function pgvpd.server_remove(p_name text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_orgs bigint;
begin
  if p_name = 'default' then
    raise exception using errcode = '42939', message = 'pgvpd: server default is built in and cannot be removed';
  end if;
  perform pgvpd_private.server_must_exist(p_name);
  -- Lock the server row first, so that no org is placed there between the count and the delete.
  perform 1 from pgvpd_private.servers s where s.name = p_name for update;
  select pg_catalog.count(*) into v_orgs from pgvpd_private.orgs o where o.server_name = p_name;
  if v_orgs > 0 then
    raise exception using errcode = '55006',
      message = pg_catalog.format('pgvpd: server %L still holds %s org(s)', p_name, v_orgs),
      hint = 'remove those orgs, or place them elsewhere, first';
  end if;
  delete from pgvpd_private.servers s where s.name = p_name;
end;
$$;

--! split: 2-orgs.sql
-- The org catalog, part 2: orgs and reserved names (docs/architecture.md §4 route, §5).
-- Why: in org mode a client names its org by the database name in its connection string
-- (dbname=acme-analytics); the proxy looks that name up here to find the org, its status and where
-- its data lives. An org is identified by a uuid, which is also its tenant id in the signed
-- context; its database name is what people type.
-- Guarantees: database names are unique, match ^[a-z0-9][a-z0-9_-]{0,62}$ and are never a reserved
-- name; org_create refuses an invalid name with 22023, a reserved one with 42939 and a taken one
-- with 23505. Placement: `shared` (the org's rows live, under RLS, in a database that several orgs
-- share: target_database, by default this database) or `dedicated` (a database of its own,
-- target_database, by default named like the org); one database on one server is either shared
-- or dedicated to exactly one org. CREATE DATABASE cannot run inside a function, so for a
-- dedicated org the CLI creates the database; the catalog only records it. Removing an org
-- removes catalog entries only: data is deleted by org_purge_rows (this database) or by dropping
-- the dedicated database (the CLI), never as a side effect.

create table if not exists pgvpd_private.reserved_names (
  name text primary key check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$')
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.reserved_names', 'where name not in (''postgres'', ''template0'', ''template1'', ''pgvpd'', ''admin'', ''root'')');

insert into pgvpd_private.reserved_names (name)
values ('postgres'), ('template0'), ('template1'), ('pgvpd'), ('admin'), ('root')
on conflict do nothing;

create table if not exists pgvpd_private.orgs (
  id uuid primary key default pg_catalog.gen_random_uuid(),
  database_name text not null unique check (database_name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  display_name text check (display_name ~ '^[^[:cntrl:]]{1,255}$'),
  status text not null default 'active' check (status in ('active', 'suspended')),
  placement text not null default 'shared' check (placement in ('shared', 'dedicated')),
  server_name text not null default 'default' references pgvpd_private.servers (name),
  target_database text not null check (target_database ~ '^[^[:cntrl:]]{1,63}$' and pg_catalog.octet_length(target_database) <= 63),
  created_at timestamptz not null default pg_catalog.clock_timestamp()
);
create index if not exists orgs_server_target on pgvpd_private.orgs (server_name, target_database);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.orgs', '');

create or replace function pgvpd.servers()
returns table (name text, host text, port integer, tls text, org_count integer, created_at timestamptz)
language sql stable security definer set search_path = ''
as $$
  select s.name, s.host, s.port, s.tls,
         (select pg_catalog.count(*)::integer from pgvpd_private.orgs o where o.server_name = s.name),
         s.created_at
    from pgvpd_private.servers s
   order by s.name = 'default' desc, s.name
$$;

-- Reserved names: database names no org may take (the names of PostgreSQL's own databases, and
-- names an operator keeps for something else).
create or replace function pgvpd.reserved_names() returns setof text
language sql stable security definer set search_path = ''
as $$
  select r.name from pgvpd_private.reserved_names r order by r.name
$$;

-- Reserves a name; false when it was reserved already. 23505 when an org already uses it.
create or replace function pgvpd.reserved_name_add(p_name text) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_org uuid;
begin
  if p_name is null or p_name !~ '^[a-z0-9][a-z0-9_-]{0,62}$' then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: invalid database name %L', p_name),
      hint = 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$';
  end if;
  select o.id into v_org from pgvpd_private.orgs o where o.database_name = p_name;
  if found then
    raise exception using errcode = '23505',
      message = pg_catalog.format('pgvpd: database name %L is already taken by org %s', p_name, v_org);
  end if;
  insert into pgvpd_private.reserved_names (name) values (p_name) on conflict do nothing;
  return found;
end;
$$;

-- Releases a reserved name; false when it was not reserved.
create or replace function pgvpd.reserved_name_remove(p_name text) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  delete from pgvpd_private.reserved_names r where r.name = p_name;
  return found;
end;
$$;

-- Why a database name cannot be used, as the error org_create would raise; NULL when it can.
create or replace function pgvpd_private.database_name_problem(p_name text)
returns table (errcode text, message text)
language sql stable security definer set search_path = ''
as $$
  select e.errcode, e.message
    from (
      select 1 as rank, '22023' as errcode, pg_catalog.format('pgvpd: invalid database name %L', p_name) as message
       where p_name is null or p_name !~ '^[a-z0-9][a-z0-9_-]{0,62}$'
      union all
      select 2, '42939', pg_catalog.format('pgvpd: database name %L is reserved', p_name)
       where exists (select 1 from pgvpd_private.reserved_names r where r.name = p_name)
      union all
      select 3, '23505', pg_catalog.format('pgvpd: database name %L is already taken', p_name)
       where exists (select 1 from pgvpd_private.orgs o where o.database_name = p_name)
    ) e
   order by e.rank
   limit 1
$$;

-- Whether org_create would accept this database name now (false for invalid, reserved, taken).
create or replace function pgvpd.org_name_available(p_name text) returns boolean
language sql stable security definer set search_path = ''
as $$
  select not exists (select 1 from pgvpd_private.database_name_problem(p_name))
$$;

-- 42704 when the org does not exist; returns its row otherwise.
create or replace function pgvpd_private.org_must_exist(p_org uuid) returns pgvpd_private.orgs
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_org pgvpd_private.orgs;
begin
  select o.* into v_org from pgvpd_private.orgs o where o.id = p_org;
  if not found then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no org %L', p_org);
  end if;
  return v_org;
end;
$$;

-- Records a new org and returns its id. The database name defaults to the id. For a dedicated
-- org the caller (the CLI) creates target_database on the server afterwards.
create or replace function pgvpd.org_create(
  p_display_name text,
  p_database_name text default null,
  p_placement text default 'shared',
  p_server text default 'default',
  p_target_database text default null
) returns uuid
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_id uuid := pg_catalog.gen_random_uuid();
  v_name text := coalesce(p_database_name, v_id::text);
  v_target text;
  v_problem record;
  v_other pgvpd_private.orgs;
begin
  select p.* into v_problem from pgvpd_private.database_name_problem(v_name) p;
  if found and v_problem.errcode = '22023' then
    raise exception using errcode = v_problem.errcode, message = v_problem.message,
      hint = 'database names match ^[a-z0-9][a-z0-9_-]{0,62}$';
  elsif found then
    raise exception using errcode = v_problem.errcode, message = v_problem.message;
  end if;
  if p_display_name is not null and p_display_name !~ '^[^[:cntrl:]]{1,255}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: display name must be 1 to 255 characters without control characters';
  end if;
  if p_placement is null or p_placement not in ('shared', 'dedicated') then
    raise exception using errcode = '22023', message = 'pgvpd: placement must be shared or dedicated';
  end if;
  perform pgvpd_private.server_must_exist(p_server);
  v_target := coalesce(p_target_database, case p_placement when 'shared' then pg_catalog.current_database() else v_name end);
  if v_target !~ '^[^[:cntrl:]]{1,63}$' or pg_catalog.octet_length(v_target) > 63 then
    raise exception using errcode = '22023',
      message = 'pgvpd: target database must be 1 to 63 bytes without control characters';
  end if;
  if p_placement = 'dedicated' and v_target in ('postgres', 'template0', 'template1') then
    raise exception using errcode = '42939',
      message = pg_catalog.format('pgvpd: database %L cannot be dedicated to an org', v_target);
  end if;
  -- One database on one server is shared by orgs, or dedicated to one org, never both.
  perform 1 from pgvpd_private.servers s where s.name = p_server for update;
  select o.* into v_other from pgvpd_private.orgs o
   where o.server_name = p_server and o.target_database = v_target
     and (p_placement = 'dedicated' or o.placement = 'dedicated')
   order by o.database_name
   limit 1;
  if found then
    raise exception using errcode = '23505',
      message = pg_catalog.format('pgvpd: database %L on server %L is already in use by org %L',
        v_target, p_server, v_other.database_name),
      hint = case when p_placement = 'dedicated' then 'a dedicated org needs a database of its own'
                  else 'that database is dedicated to one org' end;
  end if;

  begin
    insert into pgvpd_private.orgs (id, database_name, display_name, placement, server_name, target_database)
    values (v_id, v_name, p_display_name, p_placement, p_server, v_target);
  exception when unique_violation then
    -- Taken meanwhile by a concurrent org_create.
    raise exception using errcode = '23505', message = pg_catalog.format('pgvpd: database name %L is already taken', v_name);
  end;
  return v_id;
end;
$$;

-- The id of the org with this database name; 42704 when there is none.
create or replace function pgvpd.org_id(p_database_name text) returns uuid
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_id uuid;
begin
  select o.id into v_id from pgvpd_private.orgs o where o.database_name = p_database_name;
  if not found then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no org with database name %L', p_database_name);
  end if;
  return v_id;
end;
$$;

-- Suspend / resume: the proxy refuses new sessions of a suspended org. True when the status changed.
create or replace function pgvpd.org_suspend(p_org uuid) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  update pgvpd_private.orgs o set status = 'suspended' where o.id = p_org and o.status <> 'suspended';
  return found;
end;
$$;

create or replace function pgvpd.org_resume(p_org uuid) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  update pgvpd_private.orgs o set status = 'active' where o.id = p_org and o.status <> 'active';
  return found;
end;
$$;

-- Removes the org from the catalog: its users first (which revokes what pgvpd granted their
-- connect_as roles, see org_users), then the org. Roles and data are left alone.
create or replace function pgvpd.org_remove(p_org uuid) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  delete from pgvpd_private.org_users u where u.org_id = p_org;
  delete from pgvpd_private.orgs o where o.id = p_org;
end;
$$;

--! split: 3-org-users.sql
-- The org catalog, part 3: org users and their connect_as roles (docs/architecture.md §4 auth, §5).
-- Why: in org mode the proxy authenticates a client itself, with SCRAM-SHA-256, against a verifier
-- kept here (never a password), then logs in upstream as the user's connect_as role: a role the
-- customer creates and manages, which row-level security must apply to. Users are keyed by
-- (org, username), so `alice` may exist in two orgs.
-- Guarantees:
-- - verifiers have PostgreSQL's rolpassword format,
--   SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64), and no function returns
--   them except catalog_snapshot(), which only pgvpd_proxy may execute;
-- - a connect_as role exists, can log in, is neither superuser nor BYPASSRLS, is not one of pgvpd's
--   own roles, and is not a member (directly or through other roles) of a role that is any of
--   these: checked whenever a user is added or its connect_as changes, with an error naming the
--   role and the problem (42704 missing, 22023 cannot log in, 42501 the privilege ones);
-- - while a role is some user's connect_as, pgvpd makes it an application role (so protect()
--   grants it the protected tables and lint() watches it) and, if it lacks it, gives it USAGE on
--   schema pgvpd (the accessors). It records exactly what it granted in
--   pgvpd_private.connect_as_grants and, once no user refers to the role any more (user removed,
--   connect_as changed, org removed), revokes exactly that. It never creates, alters or drops a
--   role.

create table if not exists pgvpd_private.org_users (
  org_id uuid not null references pgvpd_private.orgs (id) on delete cascade,
  username text not null check (username ~ '^[^[:cntrl:]]{1,63}$'),
  scram_verifier text not null check (
    scram_verifier ~ '^SCRAM-SHA-256\$[1-9][0-9]{0,9}:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$'),
  connect_as name not null,
  created_at timestamptz not null default pg_catalog.clock_timestamp(),
  primary key (org_id, username)
);
create index if not exists org_users_connect_as on pgvpd_private.org_users (connect_as);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.org_users', '');

-- What pgvpd granted to a connect_as role, so that it revokes that and nothing else.
--   app_role              it added the role to pgvpd_private.app_role
--   usage on schema pgvpd it granted USAGE on schema pgvpd
create table if not exists pgvpd_private.connect_as_grants (
  role_name name not null,
  grant_kind text not null check (grant_kind in ('app_role', 'usage on schema pgvpd')),
  granted_at timestamptz not null default pg_catalog.clock_timestamp(),
  primary key (role_name, grant_kind)
);

create or replace function pgvpd.orgs()
returns table (
  id uuid, database_name text, display_name text, status text, placement text, server_name text,
  target_database text, user_count integer, created_at timestamptz
)
language sql stable security definer set search_path = ''
as $$
  select o.id, o.database_name, o.display_name, o.status, o.placement, o.server_name, o.target_database,
         (select pg_catalog.count(*)::integer from pgvpd_private.org_users u where u.org_id = o.id),
         o.created_at
    from pgvpd_private.orgs o
   order by o.database_name
$$;

create or replace function pgvpd_private.check_username(p_username text) returns void
language plpgsql immutable set search_path = ''
as $$
begin
  if p_username is null or p_username !~ '^[^[:cntrl:]]{1,63}$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: username must be 1 to 63 characters without control characters';
  end if;
end;
$$;

-- The verifier itself never appears in a message.
create or replace function pgvpd_private.check_verifier(p_verifier text) returns void
language plpgsql immutable set search_path = ''
as $$
begin
  if p_verifier is null
     or p_verifier !~ '^SCRAM-SHA-256\$[1-9][0-9]{0,9}:[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$' then
    raise exception using errcode = '22023',
      message = 'pgvpd: verifier is not a SCRAM-SHA-256 verifier',
      hint = 'the format is PostgreSQL''s: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, in base64';
  end if;
end;
$$;

-- Refuses a role that row-level security would not hold, naming the role and the problem.
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
  if p_role in ('pgvpd_admin', 'pgvpd_proxy') then
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
   where r.rolsuper or r.rolbypassrls or r.rolname in ('pgvpd_admin', 'pgvpd_proxy')
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

-- Keeps connect_as_grants in step with org_users, after every statement that changes org_users
-- (also a cascade from orgs): a role some user still refers to holds what it needs; a role nobody
-- refers to any more loses what pgvpd granted it, and only that.
create or replace function pgvpd_private.sync_connect_as_grants() returns trigger
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_roles name[] := '{}';
  v_role name;
  v_grant pgvpd_private.connect_as_grants;
begin
  if tg_op in ('UPDATE', 'DELETE') then
    v_roles := v_roles || array(select o.connect_as from old_rows o);
  end if;
  if tg_op in ('UPDATE', 'INSERT') then
    v_roles := v_roles || array(select n.connect_as from new_rows n);
  end if;
  for v_role in select distinct r from pg_catalog.unnest(v_roles) r order by 1 loop
    if exists (select 1 from pgvpd_private.org_users u where u.connect_as = v_role) then
      -- ON CONFLICT: a concurrent user_add may register the same role; one of them records it.
      insert into pgvpd_private.app_role (role_name) values (v_role) on conflict do nothing;
      if found then
        insert into pgvpd_private.connect_as_grants (role_name, grant_kind) values (v_role, 'app_role')
        on conflict do nothing;
      end if;
      if exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_role)
         and not pg_catalog.has_schema_privilege(v_role, 'pgvpd', 'USAGE') then
        execute pg_catalog.format('grant usage on schema pgvpd to %I', v_role);
        insert into pgvpd_private.connect_as_grants (role_name, grant_kind) values (v_role, 'usage on schema pgvpd')
        on conflict do nothing;
      end if;
    else
      for v_grant in delete from pgvpd_private.connect_as_grants g where g.role_name = v_role returning g.* loop
        if v_grant.grant_kind = 'app_role' then
          delete from pgvpd_private.app_role a where a.role_name = v_role;
        elsif exists (select 1 from pg_catalog.pg_roles r where r.rolname = v_role) then
          execute pg_catalog.format('revoke usage on schema pgvpd from %I', v_role);
        end if;
      end loop;
    end if;
  end loop;
  return null;
end;
$$;

-- Transition tables allow one event per trigger.
create or replace trigger sync_connect_as_grants_insert after insert on pgvpd_private.org_users
  referencing new table as new_rows for each statement execute function pgvpd_private.sync_connect_as_grants();
create or replace trigger sync_connect_as_grants_update after update on pgvpd_private.org_users
  referencing old table as old_rows new table as new_rows for each statement execute function pgvpd_private.sync_connect_as_grants();
create or replace trigger sync_connect_as_grants_delete after delete on pgvpd_private.org_users
  referencing old table as old_rows for each statement execute function pgvpd_private.sync_connect_as_grants();

create or replace function pgvpd.user_add(p_org uuid, p_username text, p_verifier text, p_connect_as name) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  perform pgvpd_private.check_username(p_username);
  perform pgvpd_private.check_verifier(p_verifier);
  perform pgvpd_private.check_connect_as(p_connect_as);
  insert into pgvpd_private.org_users (org_id, username, scram_verifier, connect_as)
  values (p_org, p_username, p_verifier, p_connect_as)
  on conflict do nothing;
  if not found then
    raise exception using errcode = '23505',
      message = pg_catalog.format('pgvpd: user %L already exists in org %L', p_username, p_org);
  end if;
end;
$$;

-- 42704 when the org or the user does not exist.
create or replace function pgvpd_private.user_must_exist(p_org uuid, p_username text) returns void
language plpgsql stable security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  if not exists (select 1 from pgvpd_private.org_users u where u.org_id = p_org and u.username = p_username) then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no user %L in org %L', p_username, p_org);
  end if;
end;
$$;

create or replace function pgvpd.user_set_verifier(p_org uuid, p_username text, p_verifier text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.user_must_exist(p_org, p_username);
  perform pgvpd_private.check_verifier(p_verifier);
  update pgvpd_private.org_users u set scram_verifier = p_verifier where u.org_id = p_org and u.username = p_username;
end;
$$;

create or replace function pgvpd.user_set_connect_as(p_org uuid, p_username text, p_connect_as name) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.user_must_exist(p_org, p_username);
  perform pgvpd_private.check_connect_as(p_connect_as);
  update pgvpd_private.org_users u set connect_as = p_connect_as
   where u.org_id = p_org and u.username = p_username and u.connect_as <> p_connect_as;
end;
$$;

create or replace function pgvpd.user_remove(p_org uuid, p_username text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.user_must_exist(p_org, p_username);
  delete from pgvpd_private.org_users u where u.org_id = p_org and u.username = p_username;
end;
$$;

-- An org's users, without their verifiers.
create or replace function pgvpd.org_users(p_org uuid)
returns table (username text, connect_as name, created_at timestamptz)
language plpgsql stable security definer set search_path = ''
as $$
begin
  perform pgvpd_private.org_must_exist(p_org);
  return query
    select u.username, u.connect_as, u.created_at from pgvpd_private.org_users u
     where u.org_id = p_org order by u.username;
end;
$$;

-- Deletes the org's rows from every table in this database that pgvpd protects (whose tenant
-- column holds the org's id), then removes the org from the catalog. p_confirm must be the org's
-- database name. It runs with the caller's rights: the caller needs DELETE on those tables and
-- EXECUTE on pgvpd.assume_tenant (pgvpd_admin); it takes the org's context for the deletes, so
-- forced row-level security lets them through, and clears the session's context afterwards.
-- A table whose delete is held up by a foreign key from another protected table is retried after
-- the others. Tables whose tenant column cannot hold a uuid are left alone. Dedicated databases
-- are the CLI's to drop.
create or replace function pgvpd.org_purge_rows(p_org uuid, p_confirm text)
returns table (table_name regclass, rows_deleted bigint)
language plpgsql volatile set search_path = ''
as $$
declare
  v_name text;
  v_pending regclass[];
  v_left regclass[];
  v_table regclass;
  v_column name;
  v_type regtype;
  v_count bigint;
  v_error text;
begin
  select o.database_name into v_name from pgvpd.orgs() o where o.id = p_org;
  if not found then
    raise exception using errcode = '42704', message = pg_catalog.format('pgvpd: no org %L', p_org);
  end if;
  if p_confirm is distinct from v_name then
    raise exception using errcode = '22023',
      message = pg_catalog.format('pgvpd: confirmation does not match the database name of org %L', p_org),
      hint = 'pass the org''s database name as p_confirm';
  end if;
  perform pgvpd.assume_tenant(p_org::text);
  select pg_catalog.array_agg(s.table_oid order by s.schema_name, s.table_name) into v_pending
    from pgvpd.status() s where s.pgvpd_policy;
  v_pending := coalesce(v_pending, '{}');
  while pg_catalog.cardinality(v_pending) > 0 loop
    v_left := '{}';
    foreach v_table in array v_pending loop
      select (pgvpd.protection_note(v_table) ->> 'column')::name into v_column;
      select a.atttypid::regtype into v_type from pg_catalog.pg_attribute a
       where a.attrelid = v_table and a.attname = v_column and a.attnum > 0 and not a.attisdropped;
      -- Only uuid and text-like columns can hold an org id.
      continue when v_type is null
        or v_type not in ('uuid'::regtype, 'text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'name'::regtype);
      begin
        execute pg_catalog.format('delete from %s where %I = $1::%s', v_table, v_column, v_type) using p_org::text;
        get diagnostics v_count = row_count;
        table_name := v_table;
        rows_deleted := v_count;
        return next;
      exception when foreign_key_violation then
        v_left := v_left || v_table;
        v_error := sqlerrm;
      end;
    end loop;
    if pg_catalog.cardinality(v_left) = pg_catalog.cardinality(v_pending) then
      raise exception using errcode = '23503', message = pg_catalog.format('pgvpd: cannot purge org %L: %s', p_org, v_error);
    end if;
    v_pending := v_left;
  end loop;
  perform pg_catalog.set_config('pgvpd.context', '', false);
  perform pgvpd.org_remove(p_org);
end;
$$;

--! split: 4-notify.sql
-- The org catalog, part 4: telling the proxies (docs/architecture.md §5).
-- Why: several proxy instances may share one catalog; each keeps a snapshot of it in memory and
-- must see a change (a suspended org, a removed user, a new verifier) at once, not at its next
-- poll. Every statement that changes servers, orgs, org_users or reserved_names sends
-- NOTIFY pgvpd_catalog with a short JSON payload per changed row:
--   {"table": "orgs", "op": "UPDATE", "id": "<key>"}
-- id is the server name, the org id (for orgs and org_users) or the reserved name. A statement
-- that changes more than 100 rows, and a TRUNCATE, send one notification with "id": null, meaning
-- "reload everything". The payload never holds a verifier or a username; any role that can connect
-- to this database can LISTEN, so payloads carry only what pgvpd does not treat as secret.
-- Notifications are delivered when the transaction commits, and not at all when it rolls back.

create or replace function pgvpd_private.notify_catalog() returns trigger
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_key text := tg_argv[0];
  v_ids text[] := '{}';
  v_id text;
begin
  if tg_op = 'TRUNCATE' then
    v_ids := array[null];
  else
    if tg_op in ('UPDATE', 'DELETE') then
      v_ids := v_ids || array(select pg_catalog.to_jsonb(o) ->> v_key from old_rows o);
    end if;
    if tg_op in ('UPDATE', 'INSERT') then
      v_ids := v_ids || array(select pg_catalog.to_jsonb(n) ->> v_key from new_rows n);
    end if;
    v_ids := array(select distinct i from pg_catalog.unnest(v_ids) i order by 1);
    if pg_catalog.cardinality(v_ids) > 100 then
      v_ids := array[null];
    end if;
  end if;
  foreach v_id in array v_ids loop
    perform pg_catalog.pg_notify('pgvpd_catalog',
      pg_catalog.jsonb_build_object('table', tg_table_name, 'op', tg_op, 'id', v_id)::text);
  end loop;
  return null;
end;
$$;

-- Four triggers per table: transition tables allow one event per trigger.
do $$
declare
  v_pair text[];
begin
  foreach v_pair slice 1 in array array[
    ['servers', 'name'], ['orgs', 'id'], ['org_users', 'org_id'], ['reserved_names', 'name']
  ] loop
    execute pg_catalog.format(
      'create or replace trigger notify_catalog_insert after insert on pgvpd_private.%1$I '
      'referencing new table as new_rows for each statement execute function pgvpd_private.notify_catalog(%2$L); '
      'create or replace trigger notify_catalog_update after update on pgvpd_private.%1$I '
      'referencing old table as old_rows new table as new_rows for each statement execute function pgvpd_private.notify_catalog(%2$L); '
      'create or replace trigger notify_catalog_delete after delete on pgvpd_private.%1$I '
      'referencing old table as old_rows for each statement execute function pgvpd_private.notify_catalog(%2$L); '
      'create or replace trigger notify_catalog_truncate after truncate on pgvpd_private.%1$I '
      'for each statement execute function pgvpd_private.notify_catalog(%2$L)',
      v_pair[1], v_pair[2]);
  end loop;
end;
$$;

--! split: 5-snapshot.sql
-- The org catalog, part 5: what the proxy reads.
-- Why: the proxy routes and authenticates from an in-memory copy of the catalog, loaded with one
-- call at start and again on each NOTIFY pgvpd_catalog. One function, one statement, so the copy
-- is consistent (one MVCC snapshot), and EXECUTE for pgvpd_proxy only: it is the one place that
-- hands out verifiers.
-- Shape:
--   {"servers": [{"name", "host", "port", "tls"}],        -- default: host and port null
--    "orgs":    [{"id", "database_name", "status", "placement", "server", "target_database"}],
--    "users":   [{"org_id", "username", "verifier", "connect_as"}]}
-- Suspended orgs are listed (status "suspended"): the proxy refuses them with a clear message
-- instead of "database does not exist".

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
        from pgvpd_private.org_users u), '[]'::jsonb))
$$;

--! split: 6-resolvers.sql
-- Resolvers: values the database adds to a context when it is issued (docs/architecture.md §3).
-- Why: some context values are facts the database knows better than the proxy (a user's plan,
-- region or team). A resolver is a function (p_context jsonb) returns jsonb, registered at a
-- position. issue_context calls the resolvers in position order with
--   {"tenant": <tenant>, "user": <user or null>, "values": {<values so far>}}
-- and merges each one's result (a JSON object of extra values) into the values, so a later
-- resolver sees what earlier ones added; a value of the same name is replaced. The values then go
-- into the signed token like any other.
-- Guarantees:
-- - a required resolver that raises, returns NULL, returns something other than an object, or
--   returns a value issue() would refuse (names ^[a-z_][a-z0-9_]{0,62}$, not tenant or user;
--   strings, numbers, booleans) makes issue_context refuse with 28000
--   'pgvpd: resolver <name> failed: <why>'; an optional one is skipped, and what it did is rolled
--   back;
-- - resolvers run inside issue_context, which runs as pgvpd_admin with search_path ''. A resolver
--   that is not SECURITY DEFINER therefore runs as pgvpd_admin, so it must be owned by
--   pgvpd_admin, a member of it, or a superuser, whoever could otherwise change its body would
--   gain pgvpd_admin's rights; a SECURITY DEFINER resolver runs as its owner and may be owned by
--   anyone. Checked when it is registered and again before every call;
-- - with no resolver registered, issue_context costs one lookup in an empty table more than before.
-- The registry keeps the function's signature as text (schema-qualified): pg_upgrade refuses
-- regprocedure columns in user tables, and a dropped function then fails closed ("does not exist").

create table if not exists pgvpd_private.resolvers (
  position integer primary key,
  fn text not null unique,
  required boolean not null default true,
  name text not null check (name ~ '^[^[:cntrl:]]{1,63}$'),
  created_at timestamptz not null default pg_catalog.clock_timestamp()
);
--@ext select pg_catalog.pg_extension_config_dump('pgvpd_private.resolvers', '');

-- Why a function cannot be a resolver, or NULL when it can.
create or replace function pgvpd_private.resolver_problem(p_fn oid) returns text
language sql stable security definer set search_path = ''
as $$
  select case
           when p.oid is null then 'it does not exist'
           when p.prokind <> 'f' or p.proretset or p.pronargs <> 1
                or p.proargtypes[0] <> 'pg_catalog.jsonb'::pg_catalog.regtype or p.prorettype <> 'pg_catalog.jsonb'::pg_catalog.regtype
             then 'a resolver takes (jsonb) and returns jsonb'
           when not p.prosecdef and not o.rolsuper and not pg_catalog.pg_has_role(p.proowner, 'pgvpd_admin', 'MEMBER')
             then pg_catalog.format('it would run as pgvpd_admin, but its owner %I could change it', o.rolname)
           when not pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
             then 'pgvpd_admin may not execute it'
         end
    from (select p_fn) f
    left join pg_catalog.pg_proc p on p.oid = f.p_fn
    left join pg_catalog.pg_roles o on o.oid = p.proowner
$$;

-- Registers a resolver at a position (positions order the calls). The name, used in messages,
-- defaults to the function's name.
create or replace function pgvpd.resolver_add(p_fn regprocedure, p_position integer, p_required boolean default true, p_name text default null)
returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_problem text := pgvpd_private.resolver_problem(p_fn);
  v_name text;
  v_taken pgvpd_private.resolvers;
begin
  if p_fn is null or p_position is null or p_required is null then
    raise exception using errcode = '22023', message = 'pgvpd: resolver_add needs a function, a position and required';
  end if;
  if v_problem is not null then
    raise exception using errcode = case when v_problem like 'a resolver%' then '22023' else '42501' end,
      message = pg_catalog.format('pgvpd: %s cannot be a resolver: %s', p_fn, v_problem),
      hint = case when v_problem like 'it would run%' then 'make it SECURITY DEFINER, or owned by pgvpd_admin'
                  when v_problem like 'pgvpd_admin%' then pg_catalog.format('grant execute on function %s to pgvpd_admin', p_fn)
                  else 'a resolver is a function (p_context jsonb) returns jsonb' end;
  end if;
  v_name := coalesce(p_name, (select p.proname::text from pg_catalog.pg_proc p where p.oid = p_fn));
  if v_name !~ '^[^[:cntrl:]]{1,63}$' then
    raise exception using errcode = '22023', message = 'pgvpd: resolver name must be 1 to 63 characters without control characters';
  end if;
  select r.* into v_taken from pgvpd_private.resolvers r where r.position = p_position or r.fn = p_fn::text
   order by r.fn = p_fn::text desc limit 1;
  if found then
    raise exception using errcode = '23505',
      message = case when v_taken.fn = p_fn::text
                     then pg_catalog.format('pgvpd: %s is already a resolver, at position %s', p_fn, v_taken.position)
                     else pg_catalog.format('pgvpd: resolver position %s is taken by %s', p_position, v_taken.name) end;
  end if;
  insert into pgvpd_private.resolvers (position, fn, required, name) values (p_position, p_fn::text, p_required, v_name);
end;
$$;

-- Unregisters a resolver; false when the function was not one.
create or replace function pgvpd.resolver_remove(p_fn regprocedure) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  delete from pgvpd_private.resolvers r where r.fn = p_fn::text;
  return found;
end;
$$;

create or replace function pgvpd.resolvers()
returns table ("position" integer, fn text, required boolean, name text, created_at timestamptz)
language sql stable security definer set search_path = ''
as $$
  select r.position, r.fn, r.required, r.name, r.created_at from pgvpd_private.resolvers r order by r.position
$$;

-- Runs the resolvers and returns the values to sign. Input that issue() refuses anyway (a bad
-- tenant, user or values) is returned as it is, unseen by any resolver, for issue() to refuse.
create or replace function pgvpd_private.run_resolvers(p_tenant text, p_user text, p_vals jsonb) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_vals jsonb := coalesce(p_vals, '{}'::jsonb);
  v_resolver record;
  v_out jsonb;
  v_problem text;
  v_bad text;
begin
  if p_tenant is null or p_tenant !~ '^[^[:cntrl:]]{1,255}$'
     or (p_user is not null and p_user !~ '^[^[:cntrl:]]{1,255}$')
     or pg_catalog.jsonb_typeof(v_vals) <> 'object' then
    return p_vals;
  end if;
  for v_resolver in
    select r.fn, r.required, r.name, p.oid, n.nspname, p.proname
      from pgvpd_private.resolvers r
      left join pg_catalog.pg_proc p on p.oid = pg_catalog.to_regprocedure(r.fn)
      left join pg_catalog.pg_namespace n on n.oid = p.pronamespace
     order by r.position
  loop
    v_problem := case when v_resolver.oid is null then pg_catalog.format('function %s does not exist', v_resolver.fn)
                      else pgvpd_private.resolver_problem(v_resolver.oid) end;
    if v_problem is null then
      begin
        execute pg_catalog.format('select %I.%I($1)', v_resolver.nspname, v_resolver.proname)
          into v_out
          using pg_catalog.jsonb_build_object('tenant', p_tenant, 'user', p_user, 'values', v_vals);
        if v_out is null then
          v_problem := 'it returned NULL';
        elsif pg_catalog.jsonb_typeof(v_out) <> 'object' then
          v_problem := pg_catalog.format('it returned a JSON %s, not an object', pg_catalog.jsonb_typeof(v_out));
        else
          select e.k into v_bad from pg_catalog.jsonb_each(v_out) as e(k, v)
           where e.k !~ '^[a-z_][a-z0-9_]{0,62}$' or e.k in ('tenant', 'user')
              or pg_catalog.jsonb_typeof(e.v) not in ('string', 'number', 'boolean')
           limit 1;
          if found then
            v_problem := pg_catalog.format('it returned value %L, which is not allowed', v_bad);
          end if;
        end if;
        if v_problem is not null then
          -- roll back what the resolver did, as for one that raised
          raise exception using errcode = 'P0001', message = v_problem;
        end if;
      exception when others then
        v_problem := sqlerrm;
      end;
    end if;
    if v_problem is null then
      v_vals := v_vals || v_out;
    elsif v_resolver.required then
      raise exception using errcode = '28000',
        message = pg_catalog.format('pgvpd: resolver %s failed: %s', v_resolver.name, v_problem);
    end if;
  end loop;
  return v_vals;
end;
$$;

-- issue_context as in 000001, plus the resolvers. Same signature, same EXECUTE (pgvpd_proxy).
create or replace function pgvpd.issue_context(p_backend_pid integer, p_tenant text, p_user text default null, p_vals jsonb default '{}'::jsonb)
returns text
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if pg_catalog.random() < 0.01 then
    perform pgvpd.prune_contexts();
  end if;
  if exists (select 1 from pgvpd_private.resolvers) then
    return pgvpd_private.issue(p_backend_pid, p_tenant, p_user, pgvpd_private.run_resolvers(p_tenant, p_user, p_vals));
  end if;
  return pgvpd_private.issue(p_backend_pid, p_tenant, p_user, p_vals);
end;
$$;

--! split: 7-privileges.sql
-- Ownership and EXECUTE for the catalog and the resolvers (as 000001's 008-privileges).
-- Why: functions are executable by PUBLIC when created. Every catalog function is pgvpd_admin's
-- alone, except catalog_snapshot(), the proxy's; the tables are pgvpd_admin's and nobody else's.

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
  pgvpd.server_add(text, text, integer, text), pgvpd.server_remove(text), pgvpd.servers(),
  pgvpd.reserved_names(), pgvpd.reserved_name_add(text), pgvpd.reserved_name_remove(text),
  pgvpd.org_name_available(text), pgvpd.org_create(text, text, text, text, text), pgvpd.org_id(text),
  pgvpd.org_suspend(uuid), pgvpd.org_resume(uuid), pgvpd.org_remove(uuid), pgvpd.orgs(),
  pgvpd.org_purge_rows(uuid, text),
  pgvpd.user_add(uuid, text, text, name), pgvpd.user_set_verifier(uuid, text, text),
  pgvpd.user_set_connect_as(uuid, text, name), pgvpd.user_remove(uuid, text), pgvpd.org_users(uuid),
  pgvpd.catalog_snapshot(),
  pgvpd.resolver_add(regprocedure, integer, boolean, text), pgvpd.resolver_remove(regprocedure), pgvpd.resolvers(),
  pgvpd.issue_context(integer, text, text, jsonb)
  from public;

-- The proxy's control connection: issuing context and reading the catalog.
grant execute on function pgvpd.issue_context(integer, text, text, jsonb), pgvpd.catalog_snapshot() to pgvpd_proxy;
-- Operators and the CLI.
grant execute on function
  pgvpd.server_add(text, text, integer, text), pgvpd.server_remove(text), pgvpd.servers(),
  pgvpd.reserved_names(), pgvpd.reserved_name_add(text), pgvpd.reserved_name_remove(text),
  pgvpd.org_name_available(text), pgvpd.org_create(text, text, text, text, text), pgvpd.org_id(text),
  pgvpd.org_suspend(uuid), pgvpd.org_resume(uuid), pgvpd.org_remove(uuid), pgvpd.orgs(),
  pgvpd.org_purge_rows(uuid, text),
  pgvpd.user_add(uuid, text, text, name), pgvpd.user_set_verifier(uuid, text, text),
  pgvpd.user_set_connect_as(uuid, text, name), pgvpd.user_remove(uuid, text), pgvpd.org_users(uuid),
  pgvpd.resolver_add(regprocedure, integer, boolean, text), pgvpd.resolver_remove(regprocedure), pgvpd.resolvers()
  to pgvpd_admin;
