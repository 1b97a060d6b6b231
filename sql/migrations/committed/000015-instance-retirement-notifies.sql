--! Previous: sha1:2aab85ee2e7638ef72796ae5b2fecc76d49ba966
--! Hash: sha1:9c5ba6f4d60869e0bc69810b108b552860554b63
--! Message: instance retirement notifies

--! split: 1-instance-retirement-notifies.sql
-- Retiring a proxy instance notifies the proxies.
-- Why: a proxy keeps an owner's context on a pooled backend between clients (sticky ownership,
-- docs/transaction-pooling.md) and sends nothing to a backend whose context it believes in
-- place. Retiring an instance deletes the records of its contexts; on the SQL path the backends
-- then see no context at all, silently (zero rows), until something makes the proxy switch
-- again. The proxies switch every backend in anew after any pgvpd_catalog notification, so the
-- retirement now sends one (empty payload, like the catalog's own). Otherwise as in 000013.

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
  perform pg_catalog.pg_notify('pgvpd_catalog', '');
  return true;
end;
$$;
alter function pgvpd_private.end_instance(bigint) owner to pgvpd_admin;
revoke all on function pgvpd_private.end_instance(bigint) from public;
