--! Previous: sha1:54c7d20a9b7e3f4563b19809b8c10cc877b1c0d2
--! Hash: sha1:98c211d6f104335bc31d3ff06f94f816bb881b8a
--! Message: fast set context

--! split: 1-current.sql
-- set_context without the first-call cost.
-- Why: the proxy calls set_context as the very first statement of a brand-new backend, where a
-- PL/pgSQL function that checks an HMAC costs ~4 ms (compiling the function, loading pgcrypto and
-- OpenSSL, filling caches) against ~0.3 ms for a first `select 1`: most of what a connection
-- through the proxy cost above a direct one. Every token set_context accepts must already equal
-- the record the database itself wrote for this backend (pid and token); the HMAC check never
-- changed which tokens are accepted, only which message a refused one gets. So the accepting path
-- is now one SQL statement (record lookup, set_config), and the full checks, with their precise
-- messages, run only for a token that is refused.

-- Says exactly why a token is refused (format, key, HMAC, backend, currency), always raising 28000.
create or replace function pgvpd_private.refuse_token(p_token text) returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_parts text[] := pg_catalog.string_to_array(p_token, '.');
  v_key pgvpd_private.signing_key;
  v_msg text;
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
  raise exception using errcode = '28000', message = 'pgvpd: context token is no longer current for this backend';
end;
$$;

-- Puts a token into the current session if it is the one the database issued for this backend and
-- still holds on record; returns its tenant. Anything else raises 28000 (refuse_token says why),
-- so a proxy ends the connection instead of handing the client a session without context.
-- CASE evaluates its branches in order: set_config runs only for the accepted token.
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
$$;

alter function pgvpd_private.refuse_token(text) owner to pgvpd_admin;
alter function pgvpd.set_context(text) owner to pgvpd_admin;
revoke all on function pgvpd_private.refuse_token(text) from public;
revoke all on function pgvpd.set_context(text) from public;
grant execute on function pgvpd.set_context(text) to public;
