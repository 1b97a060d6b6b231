--! Previous: sha1:21ccd6e658e7d25ea04528bd54206e050fa2bbee
--! Hash: sha1:acf21e43131db217033a87a933d2987e27055cd2
--! Message: proxy context path

--! split: 1-proxy-context-path.sql
-- The context path of this database, for the proxy, in the statement that issues a context.
-- Why: on the SQL path the accessors check the session's pgvpd.context setting against the record
-- for the backend on every statement, and a client may write that setting itself: set_context's
-- own check there only refuses early what the accessors would refuse anyway. On a brand-new
-- backend that check is most of the handshake's cost above a direct connection (set_context as a
-- fresh backend's first statement: the function, session_context and its index read into cold
-- caches, ~1.3 ms more than a first `select 1`). A proxy that knows the path writes the setting
-- itself on the SQL path (set_config, the token a bind parameter) and calls set_context only on
-- the guard path, where the settings are superuser-only and set_context is what verifies and
-- copies them. pgvpd.context_path() says the same and more, but reads pg_settings (~1.5 ms); this
-- reads one row.
-- Guarantees: only pgvpd_proxy (and pgvpd_admin, its owner) may call it; it reads one row of
-- pgvpd's own table, with an empty search_path. It tells the path setup chose, not whether the
-- server has loaded the module (pgvpd.context_path() reports a mismatch): where the two disagree
-- the proxy's first statement fails (the guard module makes pgvpd.* superuser-only) or
-- set_context loads the module, and the client gets the refusal, as before.
create or replace function pgvpd.proxy_context_path() returns text
language sql stable security definer set search_path = ''
as $$
  select p.path from pgvpd_private.context_path p
$$;
alter function pgvpd.proxy_context_path() owner to pgvpd_admin;
revoke all on function pgvpd.proxy_context_path() from public;
grant execute on function pgvpd.proxy_context_path() to pgvpd_proxy;
