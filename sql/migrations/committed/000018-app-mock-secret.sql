--! Previous: sha1:a90fac9f50db5a26cc981da7b822f1402fc487b2
--! Hash: sha1:3757d75c850f57a5d97ac4ecd92710803683acde
--! Message: app mock secret

--! split: 1-app-mock-secret.sql
-- The secret of the mock salts a pooled app-mode proxy shows for a role it will not serve.
-- Why: a pooled app-mode proxy answers a name it will not serve (unknown, not an application
-- role, a superuser...) with a mock SCRAM exchange, whose salt is derived from a secret and the
-- name so that asking twice gives the same salt, as a real role's does. With a secret of each
-- proxy's own, two proxies behind one load balancer would show two salts for an unknown name
-- and one for a real role: the names would tell themselves apart. The database's own secret
-- (pgvpd_private.proxy_secret, which org mode's catalog snapshot already hands the proxy) is
-- the same for every proxy.
-- Guarantees: only pgvpd_proxy (and pgvpd_admin, its owner) may call it; it reads one row of
-- pgvpd's own table, with an empty search_path.
create or replace function pgvpd.proxy_mock_secret() returns bytea
language sql stable security definer set search_path = ''
as $$
  select p.mock_secret from pgvpd_private.proxy_secret p
$$;
alter function pgvpd.proxy_mock_secret() owner to pgvpd_admin;
revoke all on function pgvpd.proxy_mock_secret() from public;
grant execute on function pgvpd.proxy_mock_secret() to pgvpd_proxy;
