--! Previous: sha1:76edee19cdd378c75742d761372edc8fa1e46db3
--! Hash: sha1:54c7d20a9b7e3f4563b19809b8c10cc877b1c0d2
--! Message: end session

--! split: 1-current.sql
-- pgvpd.end_session: how a draining proxy ends a session it can no longer wait for.
-- Why: after the handshake the proxy pipes bytes without reading messages, so it cannot write an
-- ErrorResponse of its own without risking the middle of a server message. PostgreSQL can: a
-- terminated backend sends FATAL 57P01 itself, correctly framed, through the pipe. The proxy's
-- role may end only sessions that carry a pgvpd context (proxied ones), not any backend;
-- pgvpd_admin, the owner, holds pg_signal_backend (which never reaches superuser backends).

grant pg_signal_backend to pgvpd_admin;

create or replace function pgvpd.end_session(p_backend_pid integer) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if not exists (
    select 1
      from pgvpd_private.session_context c
      join pg_catalog.pg_stat_activity a on a.pid = c.pid
     where c.pid = p_backend_pid
       and (c.backend_start is null or a.backend_start = c.backend_start)
  ) then
    return false;
  end if;
  return pg_catalog.pg_terminate_backend(p_backend_pid);
end;
$$;

alter function pgvpd.end_session(integer) owner to pgvpd_admin;
revoke all on function pgvpd.end_session(integer) from public;
grant execute on function pgvpd.end_session(integer) to pgvpd_proxy;
