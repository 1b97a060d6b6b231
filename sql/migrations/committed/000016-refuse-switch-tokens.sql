--! Previous: sha1:9c5ba6f4d60869e0bc69810b108b552860554b63
--! Hash: sha1:4d8c7cad222ae67645985090baeafffcde633d75
--! Message: refuse switch tokens

--! split: 1-refuse-switch-tokens.sql
-- A refused switch token says why.
-- Why: pgvpd.set_context accepts the token a switch left in the backend's record
-- ('s1.<instance>.<seq>.<mac>', migration 000013) as well as an issued one ('v1.…'); a session-mode
-- release puts an owner's context back with it. A refused one went to refuse_token, which knew
-- only 'v1' and called every 's1' token malformed. It still raises 28000 for every token it is
-- given (nothing is accepted here); it now names the retired or lapsed proxy instance of an 's1'
-- token, so that the proxy registers again at once instead of at its next switch, and says that
-- any other 's1' token is no longer current for this backend (its record holds another one).

create or replace function pgvpd_private.refuse_token(p_token text) returns text
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_parts text[] := pg_catalog.string_to_array(p_token, '.');
  v_key pgvpd_private.signing_key;
  v_msg text;
begin
  if p_token is not null and pg_catalog.cardinality(v_parts) = 4 and v_parts[1] = 's1'
     and v_parts[2] ~ '^[0-9]{1,18}$' and v_parts[3] ~ '^[0-9]{1,18}$' and v_parts[4] ~ '^[0-9a-f]{64}$' then
    if not exists (select 1 from pgvpd_private.proxy_instances i
                    where i.id = v_parts[2]::bigint and i.retired_at is null
                      and i.lease_until > pg_catalog.now()) then
      raise exception using errcode = '28000', message = pg_catalog.format(
        'pgvpd: context token refused: proxy instance %s is retired or its lease expired', v_parts[2]);
    end if;
    raise exception using errcode = '28000', message = 'pgvpd: context token is no longer current for this backend';
  end if;
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
