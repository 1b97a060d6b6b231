--! Previous: sha1:98c211d6f104335bc31d3ff06f94f816bb881b8a
--! Hash: sha1:4ef393c1c12af7696e97bbb03843c72e447526b9
--! Message: issue without pg stat activity

--! split: 1-current.sql
-- Issuing a context without reading all of pg_stat_activity.
-- Why: issue() checked the target backend through the pg_stat_activity view, which builds a row
-- for every backend of the cluster and joins it to pg_database and pg_authid: 0.5-0.8 ms of each
-- proxied connection's handshake on a 2-core machine, more with many connections.
-- pg_stat_get_activity(pid) returns the one backend asked for. Same checks, same guarantees.

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
     set token = excluded.token, kid = excluded.kid, tenant = excluded.tenant,
         username = excluded.username, vals = excluded.vals, backend_start = excluded.backend_start,
         issued_at = pg_catalog.clock_timestamp();
  return v_token;
end;
$$;
