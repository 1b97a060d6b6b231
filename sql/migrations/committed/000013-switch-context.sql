--! Previous: sha1:0f4919ee6203591e42666ecd9dd026c0e0c60657
--! Hash: sha1:9361d317e4253c3af50fb7cbde74f707d2621dff
--! Message: switch context

--! split: 1-proxy-instances.sql
-- The one-statement context switch (docs/context-switch.md), part 1: proxy instances and their keys.
-- Six parts: proxy instances (this part), the context record that a switch writes (part 2),
-- switch_context itself (part 3), the org's pool mode (part 4), lint's transaction_pool_temp
-- (part 5), ownership and EXECUTE (part 6).
-- Why: a proxy that pools per transaction hands one backend from tenant to tenant. Giving each
-- new owner its context through issue_org_context costs a round trip on a control connection
-- for every switch. Instead each proxy instance registers a key once per database, and mints
-- the switch grant itself: claims naming the backend (pid and start), a sequence number and the
-- context, with an HMAC-SHA-256 under that key. The tenant's backend checks it in one call.
-- The raw key is returned once by register_instance and never stored: the table keeps the key
-- padded to 64 bytes XOR 0x36 (ipad) and XOR 0x5c (opad), so that checking a MAC is
-- sha256(opad || sha256(ipad || claims)) with PostgreSQL's built-in sha256(), no pgcrypto.
-- Guarantees: only pgvpd_admin reads proxy_instances (no role has a privilege on it, and the
-- functions that reach it are pgvpd_admin's); register, renew and leave are pgvpd_proxy's,
-- retire is pgvpd_admin's; an instance is active while it is not retired and its lease has not
-- run out, and only an active instance's grants are accepted; retiring or leaving an instance
-- deletes every context record made under it, and on the guard path ends the backends holding
-- them (as retire_key does, 000006), so its contexts are dead at once on both paths.

create table if not exists pgvpd_private.proxy_instances (
  id bigint generated always as identity primary key,
  name text not null check (pg_catalog.length(name) between 1 and 200 and name !~ '[[:cntrl:]]'),
  ipad bytea not null check (pg_catalog.octet_length(ipad) = 64),
  opad bytea not null check (pg_catalog.octet_length(opad) = 64),
  registered_at timestamptz not null default pg_catalog.clock_timestamp(),
  lease_until timestamptz not null,
  retired_at timestamptz
);
-- Owned by pgvpd_admin at once: its identity sequence follows the table, and cannot be given
-- away on its own (part 6's loop would try).
alter table pgvpd_private.proxy_instances owner to pgvpd_admin;
revoke all on pgvpd_private.proxy_instances from public;

-- 22023 unless 10 <= p_lease_seconds <= 86400.
create or replace function pgvpd_private.check_lease(p_lease_seconds integer) returns void
language plpgsql immutable parallel safe set search_path = ''
as $$
begin
  if p_lease_seconds is null or p_lease_seconds not between 10 and 86400 then
    raise exception using errcode = '22023', message = 'pgvpd: an instance lease must be 10 to 86400 seconds';
  end if;
end;
$$;

-- Registers a proxy instance: a new random 32-byte key, returned once as lowercase hex.
create or replace function pgvpd.register_instance(p_name text, p_lease_seconds integer)
returns table (instance_id bigint, secret text)
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_key bytea := pgvpd_private.random_bytes(32);
  v_padded bytea := v_key || pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
  v_ipad bytea := v_padded;
  v_opad bytea := v_padded;
  v_i integer;
begin
  if p_name is null or pg_catalog.length(p_name) not between 1 and 200 or p_name ~ '[[:cntrl:]]' then
    raise exception using errcode = '22023',
      message = 'pgvpd: an instance name must be 1 to 200 characters without control characters';
  end if;
  perform pgvpd_private.check_lease(p_lease_seconds);
  for v_i in 0..63 loop
    v_ipad := pg_catalog.set_byte(v_ipad, v_i, pg_catalog.get_byte(v_padded, v_i) # 54); -- 0x36
    v_opad := pg_catalog.set_byte(v_opad, v_i, pg_catalog.get_byte(v_padded, v_i) # 92); -- 0x5c
  end loop;
  insert into pgvpd_private.proxy_instances as i (name, ipad, opad, lease_until)
  values (p_name, v_ipad, v_opad, pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_lease_seconds))
  returning i.id into instance_id;
  secret := pg_catalog.encode(v_key, 'hex');
  return next;
end;
$$;

-- Extends an active instance's lease. False when the instance is unknown, retired or its lease
-- has already run out: the proxy then registers again (a lapsed lease is never revived).
create or replace function pgvpd.renew_instance(p_instance bigint, p_lease_seconds integer) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  perform pgvpd_private.check_lease(p_lease_seconds);
  update pgvpd_private.proxy_instances i
     set lease_until = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_lease_seconds)
   where i.id = p_instance and i.retired_at is null and i.lease_until > pg_catalog.clock_timestamp();
  return found;
end;
$$;

-- Retires an instance and kills its contexts: records deleted (the SQL path's next statement
-- sees no context), and on the guard path, where a session keeps what it verified, the backends
-- holding them ended (pgvpd_admin holds pg_signal_backend; superusers' sessions, which it cannot
-- signal, are left alone, and carry no context anyway). True when it was not retired before.
create or replace function pgvpd_private.end_instance(p_instance bigint) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_pid integer;
begin
  update pgvpd_private.proxy_instances i set retired_at = pg_catalog.clock_timestamp()
   where i.id = p_instance and i.retired_at is null;
  if not found then
    return false;
  end if;
  for v_pid in
    delete from pgvpd_private.session_context c where c.instance = p_instance returning c.pid
  loop
    continue when v_pid = pg_catalog.pg_backend_pid()
      or not exists (select from pgvpd_private.context_path p where p.path = 'guard');
    begin
      perform pg_catalog.pg_terminate_backend(v_pid);
    exception when insufficient_privilege then
      null;
    end;
  end loop;
  return true;
end;
$$;

-- The proxy leaving (shutting down): its instance retired. Unknown or retired already: nothing.
create or replace function pgvpd.leave_instance(p_instance bigint) returns void
language sql volatile security definer set search_path = ''
as $$
  select from pgvpd_private.end_instance(p_instance)
$$;

-- An operator retiring an instance (a proxy host lost, a key suspected): 22023 when there is no
-- such instance or it is retired already. A lapsed lease is retired all the same.
create or replace function pgvpd.retire_instance(p_instance bigint) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if not pgvpd_private.end_instance(p_instance) then
    raise exception using errcode = '22023', message = pg_catalog.format('pgvpd: no active proxy instance %s', p_instance);
  end if;
end;
$$;

create or replace function pgvpd.instances()
returns table (instance_id bigint, name text, registered_at timestamptz, lease_until timestamptz,
               retired_at timestamptz, active boolean)
language sql stable security definer set search_path = ''
as $$
  select i.id, i.name, i.registered_at, i.lease_until, i.retired_at,
         i.retired_at is null and i.lease_until > pg_catalog.now()
    from pgvpd_private.proxy_instances i
   order by i.id
$$;

-- This backend's start, as microseconds since the epoch in decimal: what a switch grant's
-- "start" must say. A definer because tenant roles may not read pg_stat_get_activity (000008).
create or replace function pgvpd.backend_start() returns text
language sql stable security definer parallel restricted set search_path = ''
as $$
  select (extract(epoch from a.backend_start) * 1000000)::bigint::text
    from pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid()) a
$$;

--! split: 2-switch-records.sql
-- Part 2: the per-pid context record names either the signing key of an issued token (kid) or
-- the proxy instance of a switch grant (instance, with the grant's seq).
-- Why: a switch writes the same record issue() writes, so that the accessors on both paths
-- (which look the record up by pid and token, 000001 and 000006) and prune_contexts accept it
-- unchanged; a switch record is signed by no key of this database, and its instance decides
-- whether it lives (retiring the instance deletes it, as retiring a key deletes its records).
-- Guarantees: every record has exactly one of kid and instance; issue() (as in 000007) clears
-- instance and seq when it replaces a switch record, so that a token issued on the control
-- connection and a switch grant replace each other whichever comes first.

alter table pgvpd_private.session_context
  add column if not exists instance bigint references pgvpd_private.proxy_instances (id) on delete cascade,
  add column if not exists seq bigint,
  alter column kid drop not null;
do $$
begin
  if not exists (select from pg_catalog.pg_constraint k
                  where k.conrelid = 'pgvpd_private.session_context'::regclass
                    and k.conname = 'session_context_kid_or_instance') then
    alter table pgvpd_private.session_context
      add constraint session_context_kid_or_instance check ((kid is null) <> (instance is null));
  end if;
end;
$$;

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
  if p_tenant is null or pg_catalog.length(p_tenant) not between 1 and 255 or p_tenant ~ '[[:cntrl:]]' then
    raise exception using errcode = '22023',
      message = 'pgvpd: tenant must be 1 to 255 characters without control characters';
  end if;
  if p_user is not null and (pg_catalog.length(p_user) not between 1 and 255 or p_user ~ '[[:cntrl:]]') then
    raise exception using errcode = '22023',
      message = 'pgvpd: user must be 1 to 255 characters without control characters';
  end if;
  if pg_catalog.jsonb_typeof(v_vals) <> 'object' then
    raise exception using errcode = '22023', message = 'pgvpd: context values must be a JSON object';
  end if;
  if v_vals <> '{}'::jsonb then
    select k into v_bad from pg_catalog.jsonb_each(v_vals) as e(k, v)
     where pg_catalog.length(k) > 63 or k !~ '^[a-z_][a-z0-9_]*$' or k in ('tenant', 'user')
        or pg_catalog.jsonb_typeof(v) not in ('string', 'number', 'boolean')
     limit 1;
  end if;
  if v_bad is not null then
    raise exception using errcode = '22023',
      message = pg_catalog.format('pgvpd: context value %L is not allowed', v_bad),
      hint = 'names match ^[a-z_][a-z0-9_]{0,62}$ (not tenant or user); values are strings, numbers or booleans';
  end if;

  select a.backend_start into v_start
    from pg_catalog.pg_stat_get_activity(p_pid) a
   where a.datid = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
     and a.backend_type = 'client backend';
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
     set token = excluded.token, kid = excluded.kid, instance = null, seq = null, tenant = excluded.tenant,
         username = excluded.username, vals = excluded.vals, backend_start = excluded.backend_start,
         issued_at = pg_catalog.clock_timestamp();
  return v_token;
end;
$$;

--! split: 3-switch-context.sql
-- Part 3: switch_context, the tenant backend's own one statement that changes its context.
-- Why: see part 1. The proxy sends, as bind parameters only,
--   select pgvpd.switch_context($1::bigint, $2, $3)
-- with the instance, the claims exactly as it signed them, and the MAC:
--   claims  {"pid":123,"start":"1733540000123456","seq":7,"org":"<uuid>"|null,
--            "tenant":"<text>"|null,"user":"<text>"|null,"vals":{}}
--           org mode: org set, tenant null (the tenant is the org id); app mode: org null.
--   mac     lowercase hex of HMAC-SHA-256(instance key, UTF-8 bytes of claims)
-- Checks, in this order; each refusal is SQLSTATE 28000 and writes nothing:
--   1. the instance is active (not retired, lease not run out);
--   2. the MAC verifies (compared through a second keyed hash, so that timing says nothing of
--      the expected bytes);
--   3. pid is this backend's;
--   4. start is this backend's start (pgvpd.backend_start()): a grant for an earlier backend
--      that had this pid is worthless;
--   5. seq is greater than the seq of the record this backend holds, when that record is this
--      backend's (same start) and came from a switch: a grant is good once, and never after a
--      newer one (replay, reordering);
--   6. this backend's session role may carry the context: the check and message of
--      issue_context / issue_org_context (tenant_role_problem, 000012);
--   7. tenant, user and values as issue() checks them (22023, the same messages), and in org
--      mode a user and no tenant of its own.
-- Then the resolvers, if any (as issue_context runs them), and the record: the pid's record is
-- replaced (token 's1.<instance>.<seq>.<mac>'), so every older token of the pid is dead, and
-- pgvpd.context is set to the new token; on the guard path the guarded settings are set as
-- set_context sets them (after pgvpd.guard_loaded()). The path is read from
-- pgvpd_private.context_path at each call, so choose_context_path() (run by every setup) needs
-- to know nothing of this function.
-- A refusal is an error, and PostgreSQL undoes the failed statement's setting changes with it:
-- after a refused switch the backend holds what it held before the call (the proxy resets a
-- backend before it switches it, so that is no context, and drops a backend whose switch was
-- refused). Nothing of the grant is ever kept but its MAC, in the token.
-- Cost: one PL/pgSQL call (compiled once per backend), two record lookups and three sha256()
-- over the claims; no pgcrypto, no control connection.

create or replace function pgvpd.switch_context(p_instance bigint, p_claims text, p_mac text) returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_ipad bytea;
  v_opad bytea;
  v_pid integer := pg_catalog.pg_backend_pid();
  v_claims jsonb;
  v_start timestamptz;
  v_seq bigint;
  v_held bigint;
  v_org uuid;
  v_tenant text;
  v_user text;
  v_vals jsonb;
  v_problem text;
  v_bad text;
  v_token text;
begin
  select i.ipad, i.opad into v_ipad, v_opad
    from pgvpd_private.proxy_instances i
   where i.id = p_instance and i.retired_at is null and i.lease_until > pg_catalog.now();
  if not found then
    raise exception using errcode = '28000',
      message = pg_catalog.format('pgvpd: switch grant refused: proxy instance %s is retired or its lease expired', p_instance);
  end if;
  if p_claims is null or p_mac is null
     or pg_catalog.sha256(v_ipad || pg_catalog.convert_to(p_mac, 'UTF8'))
        <> pg_catalog.sha256(v_ipad || pg_catalog.convert_to(pg_catalog.encode(
             pg_catalog.sha256(v_opad || pg_catalog.sha256(v_ipad || pg_catalog.convert_to(p_claims, 'UTF8'))), 'hex'), 'UTF8')) then
    raise exception using errcode = '28000', message = 'pgvpd: switch grant signature does not verify';
  end if;
  v_claims := p_claims::jsonb;
  if v_claims ->> 'pid' is distinct from v_pid::text then
    raise exception using errcode = '28000', message = 'pgvpd: switch grant was minted for another backend';
  end if;
  select a.backend_start into v_start from pg_catalog.pg_stat_get_activity(v_pid) a;
  if v_claims ->> 'start' is distinct from (extract(epoch from v_start) * 1000000)::bigint::text then
    raise exception using errcode = '28000', message = 'pgvpd: switch grant was minted for an earlier backend with this pid';
  end if;
  v_seq := (v_claims ->> 'seq')::bigint;
  select c.seq into v_held from pgvpd_private.session_context c
   where c.pid = v_pid and c.backend_start = v_start;
  if v_seq is null or v_seq <= v_held then
    raise exception using errcode = '28000',
      message = 'pgvpd: switch grant is not newer than the one this backend holds (replayed or out of order)';
  end if;

  v_org := (v_claims ->> 'org')::uuid;
  v_user := v_claims ->> 'user';
  v_problem := pgvpd_private.tenant_role_problem(v_pid, v_org, v_user);
  if v_problem is not null then
    raise exception using errcode = '28000',
      message = pg_catalog.format('pgvpd: no context for backend %s: %s', v_pid, v_problem),
      hint = case when v_org is null
                  then 'app mode serves registered application roles (pgvpd.add_app_role) that are NOSUPERUSER NOBYPASSRLS, members of no such role, and no org''s connect_as role'
                  else 'org mode serves each org user''s connect_as role, which must be NOSUPERUSER NOBYPASSRLS and a member of no such role' end;
  end if;

  -- The checks of issue() (000007), with its messages.
  if v_org is not null then
    if v_claims ->> 'tenant' is not null or v_user is null then
      raise exception using errcode = '22023', message = 'pgvpd: a switch grant in org mode names a user and no tenant';
    end if;
    v_tenant := v_org::text;
  else
    v_tenant := v_claims ->> 'tenant';
  end if;
  if v_tenant is null or pg_catalog.length(v_tenant) not between 1 and 255 or v_tenant ~ '[[:cntrl:]]' then
    raise exception using errcode = '22023',
      message = 'pgvpd: tenant must be 1 to 255 characters without control characters';
  end if;
  if v_user is not null and (pg_catalog.length(v_user) not between 1 and 255 or v_user ~ '[[:cntrl:]]') then
    raise exception using errcode = '22023',
      message = 'pgvpd: user must be 1 to 255 characters without control characters';
  end if;
  v_vals := coalesce(v_claims -> 'vals', '{}'::jsonb);
  if pg_catalog.jsonb_typeof(v_vals) <> 'object' then
    raise exception using errcode = '22023', message = 'pgvpd: context values must be a JSON object';
  end if;
  if v_vals <> '{}'::jsonb then
    select k into v_bad from pg_catalog.jsonb_each(v_vals) as e(k, v)
     where pg_catalog.length(k) > 63 or k !~ '^[a-z_][a-z0-9_]*$' or k in ('tenant', 'user')
        or pg_catalog.jsonb_typeof(v) not in ('string', 'number', 'boolean')
     limit 1;
    if v_bad is not null then
      raise exception using errcode = '22023',
        message = pg_catalog.format('pgvpd: context value %L is not allowed', v_bad),
        hint = 'names match ^[a-z_][a-z0-9_]{0,62}$ (not tenant or user); values are strings, numbers or booleans';
    end if;
  end if;
  if exists (select 1 from pgvpd_private.resolvers) then
    v_vals := pgvpd_private.run_resolvers(v_tenant, v_user, v_vals);
  end if;

  v_token := 's1.' || p_instance || '.' || v_seq || '.' || p_mac;
  insert into pgvpd_private.session_context as c (pid, token, kid, instance, seq, tenant, username, vals, backend_start)
  values (v_pid, v_token, null, p_instance, v_seq, v_tenant, v_user, v_vals, v_start)
  on conflict (pid) do update
     set token = excluded.token, kid = null, instance = excluded.instance, seq = excluded.seq,
         tenant = excluded.tenant, username = excluded.username, vals = excluded.vals,
         backend_start = excluded.backend_start, issued_at = pg_catalog.clock_timestamp();
  if exists (select from pgvpd_private.context_path p where p.path = 'guard') then
    perform pgvpd.guard_loaded();
    perform pg_catalog.set_config('pgvpd.tenant_id', v_tenant, false);
    perform pg_catalog.set_config('pgvpd.user_id', coalesce(v_user, ''), false);
    perform pg_catalog.set_config('pgvpd.values', v_vals::text, false);
  end if;
  perform pg_catalog.set_config('pgvpd.context', v_token, false);
  return v_tenant;
end;
$$;

--! split: 4-org-pool-mode.sql
-- Part 4: an org's pool mode.
-- Why: the proxy pools per session or per transaction (its pool_mode setting); an org whose
-- applications rely on session state (temporary tables, session advisory locks, LISTEN, SQL
-- PREPARE) must stay on session pooling while others share backends per transaction.
-- Guarantees: orgs.pool_mode is NULL (the proxy's pool_mode applies), 'session' or
-- 'transaction'; org_set_pool_mode refuses anything else with 22023 and an unknown org with
-- 42704; catalog_snapshot() carries each org's pool_mode, and a change notifies the proxies
-- (the orgs table's NOTIFY trigger, 000008) like any change of the catalog.

alter table pgvpd_private.orgs
  add column if not exists pool_mode text check (pool_mode in ('session', 'transaction'));

create or replace function pgvpd.org_set_pool_mode(p_org uuid, p_mode text) returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if p_mode is not null and p_mode not in ('session', 'transaction') then
    raise exception using errcode = '22023', message = 'pgvpd: pool mode must be session or transaction';
  end if;
  perform pgvpd_private.org_must_exist(p_org);
  update pgvpd_private.orgs o set pool_mode = p_mode where o.id = p_org and o.pool_mode is distinct from p_mode;
end;
$$;

-- As in 000008, with each org's pool_mode (null: the proxy's setting).
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
               'server', o.server_name, 'target_database', o.target_database, 'pool_mode', o.pool_mode)
               order by o.database_name)
        from pgvpd_private.orgs o), '[]'::jsonb),
    'users', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'org_id', u.org_id, 'username', u.username, 'verifier', u.scram_verifier,
               'connect_as', u.connect_as) order by u.org_id, u.username)
        from pgvpd_private.org_users u), '[]'::jsonb),
    'mock_secret', (select pg_catalog.encode(p.mock_secret, 'hex') from pgvpd_private.proxy_secret p))
$$;

--! split: 5-lint.sql
-- Part 5: lint as in 000012, plus one check.
-- Why: per-transaction pooling hands a backend from session to session between transactions;
-- a temporary table lives as long as the backend, so one session's temporary table shadows the
-- real table of that name (pg_temp is searched first) in the next session on that backend. The
-- proxy drops temporary tables when a backend changes owner, but a role that may create them
-- still breaks sessions of one owner, and makes the proxy's reset the only barrier.
-- Guarantees:
--   transaction_pool_temp   a connect_as role of an org whose pool_mode is 'transaction' has
--                           TEMPORARY on the org's target database (one on this server: server
--                           default); a warning naming the role, the org's database name and the
--                           revoke that ends it (also from PUBLIC when PUBLIC holds TEMPORARY,
--                           which it does on every database by default). lint() runs with its
--                           caller's rights and orgs are pgvpd_admin's, so the finding is read
--                           through transaction_pool_temp_roles(), which answers only a session
--                           of pgvpd_admin or a member of it (a superuser's included): a tenant
--                           calling lint() learns no org's name.

create or replace function pgvpd.transaction_pool_temp_roles()
returns table (connect_as name, database_name text, datname name, public_temp boolean)
language sql stable security definer set search_path = ''
as $$
  select distinct u.connect_as, o.database_name, d.datname,
         exists (select 1 from pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) x
                  where x.grantee = 0 and x.privilege_type = 'TEMPORARY')
    from pgvpd_private.orgs o
    join pg_catalog.pg_database d on d.datname = o.target_database
    join pgvpd_private.org_users u on u.org_id = o.id
    join pg_catalog.pg_roles r on r.rolname = u.connect_as
   where o.pool_mode = 'transaction' and o.server_name = 'default'
     and pg_catalog.has_database_privilege(r.oid, d.oid, 'TEMPORARY')
     and pg_catalog.pg_has_role(session_user, 'pgvpd_admin', 'MEMBER')
$$;

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
  union all
  select 'warning', 'transaction_pool_temp', t.connect_as::text,
         pg_catalog.format('connect_as role %I of org %s (pool mode transaction) may create temporary tables in database %I: they outlive the transaction, on a backend the proxy goes on to lend to other sessions',
           t.connect_as, t.database_name, t.datname),
         pg_catalog.format('revoke temporary on database %I from %I', t.datname, t.connect_as)
           || case when t.public_temp then pg_catalog.format('; revoke temporary on database %I from public', t.datname) else '' end
    from pgvpd.transaction_pool_temp_roles() t
$$;

--! split: 6-privileges.sql
-- Ownership and EXECUTE for what this migration made (as 000008's 7-privileges).
-- switch_context and backend_start are PUBLIC: the tenant's own backend calls them, and they
-- fail closed (a grant verifies under an active instance's key or nothing happens). Instances
-- are the proxy's (register, renew, leave, list) and the operator's (retire, list).

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
  pgvpd.register_instance(text, integer), pgvpd.renew_instance(bigint, integer), pgvpd.leave_instance(bigint),
  pgvpd.retire_instance(bigint), pgvpd.instances(), pgvpd.backend_start(),
  pgvpd.switch_context(bigint, text, text), pgvpd.org_set_pool_mode(uuid, text),
  pgvpd.transaction_pool_temp_roles()
  from public;
grant execute on function
  pgvpd.register_instance(text, integer), pgvpd.renew_instance(bigint, integer), pgvpd.leave_instance(bigint),
  pgvpd.instances()
  to pgvpd_proxy;
grant execute on function
  pgvpd.retire_instance(bigint), pgvpd.instances(), pgvpd.org_set_pool_mode(uuid, text)
  to pgvpd_admin;
-- lint() calls it; it answers only pgvpd_admin's sessions.
grant execute on function
  pgvpd.backend_start(), pgvpd.switch_context(bigint, text, text), pgvpd.transaction_pool_temp_roles()
  to public;
