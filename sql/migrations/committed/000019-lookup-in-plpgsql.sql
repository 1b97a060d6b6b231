--! Previous: sha1:3757d75c850f57a5d97ac4ecd92710803683acde
--! Hash: sha1:21ccd6e658e7d25ea04528bd54206e050fa2bbee
--! Message: lookup in plpgsql

--! split: 1-lookup-in-plpgsql.sql
-- The verifier lookup of pooled app mode in PL/pgSQL.
-- Why: the proxy runs the lookup at every pooled app-mode login. As SQL functions that cannot be
-- inlined (security definer), 000017's two functions and 000018's had their bodies parsed and
-- planned again at every call: 0.37 ms of the control backend's time per login against 0.10 ms
-- for the same statements as PL/pgSQL, whose plans a long-lived control connection keeps. The
-- conditions, owners and grants are 000017's and 000018's, unchanged.
-- Guarantees: as 000017 and 000018. role_scram_verifier is dropped and made again here too (after
-- 000017 made its SQL version when setup runs again), the superuser's, EXECUTE for pgvpd_admin
-- only; it reads only pg_catalog, every name qualified, with an empty search_path.
drop function if exists pgvpd_private.role_scram_verifier(text);
create function pgvpd_private.role_scram_verifier(p_role text, out verifier text, out problem text)
language plpgsql stable security definer set search_path = ''
as $$
begin
  select case when a.rolpassword like 'SCRAM-SHA-256$%' then a.rolpassword end,
         case when a.rolpassword is null then 'no password'
              when a.rolpassword like 'SCRAM-SHA-256$%' then null
              else 'md5' end
    into verifier, problem
    from pg_catalog.pg_authid a
   where a.rolname = p_role
     and a.rolcanlogin and not a.rolsuper and not a.rolbypassrls
     and not a.rolcreaterole and not a.rolreplication
     and (a.rolvaliduntil is null or a.rolvaliduntil > pg_catalog.now())
     and exists (
       select 1 from pg_catalog.pg_roles t
        where t.rolname = 'pgvpd_tenant' and pg_catalog.pg_has_role(a.oid, t.oid, 'MEMBER'))
     and not exists (
       select 1 from pg_catalog.pg_roles x
        where (x.rolsuper or x.rolbypassrls or x.rolcreaterole or x.rolreplication
               or x.rolname in ('pgvpd_admin', 'pgvpd_proxy', 'pgvpd_api',
                                'pg_execute_server_program', 'pg_read_server_files',
                                'pg_write_server_files', 'pg_read_all_data', 'pg_write_all_data'))
          and pg_catalog.pg_has_role(a.oid, x.oid, 'MEMBER'));
end;
$$;
revoke all on function pgvpd_private.role_scram_verifier(text) from public;
grant execute on function pgvpd_private.role_scram_verifier(text) to pgvpd_admin;

create or replace function pgvpd.app_role_verifier(p_role text, out verifier text, out problem text)
language plpgsql stable security definer set search_path = ''
as $$
begin
  select v.verifier, v.problem
    into verifier, problem
    from pgvpd_private.role_scram_verifier(p_role) v
   where exists (select 1 from pgvpd_private.app_role r where r.role_name = p_role)
     and not exists (select 1 from pgvpd_private.org_users u where u.connect_as = p_role);
end;
$$;
alter function pgvpd.app_role_verifier(text) owner to pgvpd_admin;
revoke all on function pgvpd.app_role_verifier(text) from public;
grant execute on function pgvpd.app_role_verifier(text) to pgvpd_proxy;

create or replace function pgvpd.proxy_mock_secret() returns bytea
language plpgsql stable security definer set search_path = ''
as $$
begin
  return (select p.mock_secret from pgvpd_private.proxy_secret p);
end;
$$;
alter function pgvpd.proxy_mock_secret() owner to pgvpd_admin;
revoke all on function pgvpd.proxy_mock_secret() from public;
grant execute on function pgvpd.proxy_mock_secret() to pgvpd_proxy;
