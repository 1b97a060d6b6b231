--! Previous: sha1:3dc707390164115ca1d354b132f728411b3f1330
--! Hash: sha1:9a44d792e273647e29cf8c73a972da82d1678198
--! Message: issue without bounded repetition

--! split: 1-current.sql
-- Issuing a context without bounded-repetition regular expressions.
-- Why: issue() checked tenant and user with '^[^[:cntrl:]]{1,255}$'. PostgreSQL's regex engine
-- runs a bounded repetition like {1,255} as that many states: each match cost ~50 µs, two per
-- issued context, a third of issue_context's time in the control backend of every proxied
-- connection (docs/benchmarks.md). A length check and '[[:cntrl:]]' accept and refuse exactly
-- the same strings (length counts characters, as {1,255} does). Value names likewise: at most 63
-- characters and '^[a-z_][a-z0-9_]*$', the same set as '^[a-z_][a-z0-9_]{0,62}$'; and an empty
-- object, what the proxies send, skips that query. Same errors, same messages.

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
     set token = excluded.token, kid = excluded.kid, tenant = excluded.tenant,
         username = excluded.username, vals = excluded.vals, backend_start = excluded.backend_start,
         issued_at = pg_catalog.clock_timestamp();
  return v_token;
end;
$$;
