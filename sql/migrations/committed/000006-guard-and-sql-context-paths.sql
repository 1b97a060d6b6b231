--! Previous: sha1:f3a3a8447f59d9df4ae6b652d3d1aec91d246d10
--! Hash: sha1:3dc707390164115ca1d354b132f728411b3f1330
--! Message: guard and sql context paths

--! split: 1-current.sql
-- The two context paths (docs/architecture.md §3, docs/guard.md).
-- Why: on the SQL path every statement verifies the session's token against its record (a
-- SECURITY DEFINER call and a lookup per statement). Where the server has loaded the guard module
-- (extension/pgvpd_guard.c), the pgvpd.* settings are superuser-only: set_context verifies the
-- token once and copies the verified values into them, and the accessors become the module's C
-- functions that read those settings, which no client can set. Which path a database uses is decided by setup from what
-- the server has loaded (pgvpd.choose_context_path(), run at the end of every setup), and
-- recorded, so that status and doctor can show it and catch a server that changed since.
--
-- On both paths an empty pgvpd.context means no context: clearing the carrier (RESET ALL, DISCARD
-- ALL, org_purge_rows) clears the tenant.

create table if not exists pgvpd_private.context_path (
  only_row boolean primary key default true check (only_row),
  path text not null check (path in ('sql', 'guard')),
  chosen_at timestamptz not null default pg_catalog.now()
);
alter table pgvpd_private.context_path owner to pgvpd_admin;
revoke all on pgvpd_private.context_path from public;
insert into pgvpd_private.context_path (path) values ('sql') on conflict (only_row) do nothing;

-- Whether this session has the guard module: it defines pgvpd.guard as an internal setting,
-- which nothing else can make (a client's placeholder would be a user setting).
create or replace function pgvpd_private.guard_module_loaded() returns boolean
language sql stable set search_path = ''
as $$
  select exists (select from pg_catalog.pg_settings s where s.name = 'pgvpd.guard' and s.context = 'internal')
$$;
alter function pgvpd_private.guard_module_loaded() owner to pgvpd_admin;
revoke all on function pgvpd_private.guard_module_loaded() from public;

-- Set_context's first call on the guard path. Made here, as a placeholder, so that it belongs to
-- the extension when pgvpd is one; choose_context_path() replaces it with the module's C function
-- or with this placeholder again, and never drops it.
create or replace function pgvpd.guard_loaded() returns boolean
language plpgsql stable set search_path = ''
as $$
begin
  raise exception using errcode = '55000', message = 'pgvpd: the pgvpd_guard module is not in use in this database',
    hint = 'run pgvpd setup';
end;
$$;
alter function pgvpd.guard_loaded() owner to pgvpd_admin;
revoke all on function pgvpd.guard_loaded() from public;

-- The path this database uses, whether the module is loaded in this session, and what to do when
-- the two disagree (null when they agree). For `pgvpd status` and `pgvpd doctor`.
create or replace function pgvpd.context_path(out path text, out module_loaded boolean, out problem text)
language sql stable security definer set search_path = ''
as $$
  select p.path,
         pgvpd_private.guard_module_loaded(),
         case
           when p.path = 'sql' and pgvpd_private.guard_module_loaded() then
             'the pgvpd_guard module is loaded but this database uses the SQL path: run pgvpd setup (as a superuser) again'
           when p.path = 'guard' and not pgvpd_private.guard_module_loaded() then
             'this database uses the guard path but the pgvpd_guard module is not loaded: add it to shared_preload_libraries and restart, or run pgvpd setup again to go back to the SQL path (until then each session loads the module on first use, and fails if its file is gone)'
         end
    from pgvpd_private.context_path p
$$;
alter function pgvpd.context_path() owner to pgvpd_admin;
revoke all on function pgvpd.context_path() from public;
grant execute on function pgvpd.context_path() to public;

-- Chooses the path from what the server has loaded, (re)defines set_context, current_tenant_id
-- and context for it, and records it. Run by setup after the migrations, every time; the guard
-- path needs a superuser (a C function, and SET on the guarded settings for pgvpd_admin).
create or replace function pgvpd.choose_context_path() returns text
language plpgsql volatile set search_path = ''
as $fn$
declare
  v_guard boolean := pgvpd_private.guard_module_loaded();
  v_try integer;
begin
  if v_guard then
    if not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
      raise exception using errcode = '42501',
        message = 'pgvpd: the pgvpd_guard module is loaded, and only a superuser can set up its path',
        hint = 'run pgvpd setup (or this function) once as a superuser';
    end if;
    -- Loaded in this session is not enough: every session of the server must have it.
    if pg_catalog.current_setting('shared_preload_libraries') !~ '(^|[\s,"])pgvpd_guard([\s,"]|$)' then
      raise exception using errcode = '55000',
        message = 'pgvpd: the pgvpd_guard module is loaded in this session but the server does not preload it',
        hint = 'add pgvpd_guard to shared_preload_libraries and restart the server, then run pgvpd setup';
    end if;
    execute $sql$
      create or replace function pgvpd.guard_loaded() returns boolean
      language c stable parallel safe as '$libdir/pgvpd_guard', 'pgvpd_guard_loaded'
    $sql$;
    alter function pgvpd.guard_loaded() owner to pgvpd_admin;
    -- The grant is cluster-wide (pg_parameter_acl): two databases of one cluster running setup at
    -- once would update the same rows and one fails with "tuple concurrently updated". So grant
    -- only what is missing, and try again after such a clash. (Dynamic: PostgreSQL 15 syntax.)
    for v_try in 1..50 loop
      exit when (select pg_catalog.bool_and(pg_catalog.has_parameter_privilege('pgvpd_admin', p, 'SET'))
                   from pg_catalog.unnest(array['pgvpd.context', 'pgvpd.tenant_id', 'pgvpd.user_id', 'pgvpd.values']) as p);
      begin
        execute 'grant set on parameter pgvpd.context, pgvpd.tenant_id, pgvpd.user_id, pgvpd.values to pgvpd_admin';
      exception when others then
        if v_try = 50 then
          raise;
        end if;
        perform pg_catalog.pg_sleep(0.02);
      end;
    end loop;

    -- Verified once, against the record issue() wrote for this backend and token, and for this
    -- very backend: its start time must be the one on record, so a token that escaped a session
    -- is worthless on a later backend that got the same pid. The values are then copied into
    -- settings only pgvpd_admin (this function's owner) may set.
    execute $sql$
      create or replace function pgvpd.set_context(p_token text) returns text
      language sql volatile security definer set search_path = ''
      as $$
        select case
                 when c.pid is null then pgvpd_private.refuse_token(p_token)
                 when pgvpd.guard_loaded()
                  and pg_catalog.set_config('pgvpd.tenant_id', c.tenant, false) is not null
                  and pg_catalog.set_config('pgvpd.user_id', coalesce(c.username, ''), false) is not null
                  and pg_catalog.set_config('pgvpd.values', c.vals::text, false) is not null
                  and pg_catalog.set_config('pgvpd.context', p_token, false) is not null
                   then c.tenant
               end
          from (select 1) as one
          left join pgvpd_private.session_context c
            on c.pid = pg_catalog.pg_backend_pid() and c.token = p_token
           and c.backend_start = (select a.backend_start
                                    from pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a)
      $$
    $sql$;
    -- The accessors are the module's C functions reading those settings: a function call per
    -- statement, like current_setting. (An inlinable SQL body was measured at +26 µs per
    -- simple-protocol statement: the planner parses a SQL function's body each time it inlines
    -- it; docs/benchmarks.md.) Being in the module, they also load it, like guard_loaded().
    execute $sql$
      create or replace function pgvpd.current_tenant_id() returns text
      language c stable parallel restricted as '$libdir/pgvpd_guard', 'pgvpd_guard_tenant_id'
    $sql$;
    execute $sql$
      create or replace function pgvpd.context(p_key text) returns text
      language c stable strict parallel restricted as '$libdir/pgvpd_guard', 'pgvpd_guard_context'
    $sql$;
  else
    -- The SQL path: the same definitions as migrations 000001 and 000003.
    execute $sql$
      create or replace function pgvpd.set_context(p_token text) returns text
      language sql volatile security definer set search_path = ''
      as $$
        select case
                 when c.pid is null then pgvpd_private.refuse_token(p_token)
                 when pg_catalog.set_config('pgvpd.context', p_token, false) is not null then c.tenant
               end
          from (select 1) as one
          left join pgvpd_private.session_context c
            on c.pid = pg_catalog.pg_backend_pid() and c.token = p_token
      $$
    $sql$;
    execute $sql$
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
      $$
    $sql$;
    execute $sql$
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
      $$
    $sql$;
    -- A guard path left behind (the module was removed): its C function goes back to the
    -- placeholder (replaced, not dropped: it may belong to the extension).
    execute $sql$
      create or replace function pgvpd.guard_loaded() returns boolean
      language plpgsql stable set search_path = ''
      as $$
      begin
        raise exception using errcode = '55000', message = 'pgvpd: the pgvpd_guard module is not in use in this database',
          hint = 'run pgvpd setup';
      end;
      $$
    $sql$;
  end if;
  alter function pgvpd.set_context(text) owner to pgvpd_admin;
  alter function pgvpd.current_tenant_id() owner to pgvpd_admin;
  alter function pgvpd.context(text) owner to pgvpd_admin;
  revoke all on function pgvpd.set_context(text), pgvpd.current_tenant_id(), pgvpd.context(text) from public;
  grant execute on function pgvpd.set_context(text), pgvpd.current_tenant_id(), pgvpd.context(text) to public;
  -- Only set_context (owner pgvpd_admin) calls it.
  alter function pgvpd.guard_loaded() owner to pgvpd_admin;
  revoke all on function pgvpd.guard_loaded() from public;
  update pgvpd_private.context_path
     set path = case when v_guard then 'guard' else 'sql' end, chosen_at = pg_catalog.now();
  return case when v_guard then 'guard' else 'sql' end;
end;
$fn$;
revoke all on function pgvpd.choose_context_path() from public;

-- Retiring a key voids its tokens. On the SQL path that takes the context from every live session
-- under the key at its next statement; on the guard path a session keeps what it verified, so
-- retire_key now also ends those sessions (pgvpd_admin holds pg_signal_backend; superusers'
-- sessions, which it cannot signal, are left alone). Otherwise as in 000001.
create or replace function pgvpd.retire_key(p_kid text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_pid integer;
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
  for v_pid in
    delete from pgvpd_private.session_context c where c.kid = p_kid returning c.pid
  loop
    continue when v_pid = pg_catalog.pg_backend_pid()
      or not exists (select from pgvpd_private.context_path p where p.path = 'guard');
    begin
      perform pg_catalog.pg_terminate_backend(v_pid);
    exception when insufficient_privilege then
      null;
    end;
  end loop;
end;
$$;
alter function pgvpd.retire_key(text) owner to pgvpd_admin;
