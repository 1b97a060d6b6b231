--! Previous: sha1:9361d317e4253c3af50fb7cbde74f707d2621dff
--! Hash: sha1:2aab85ee2e7638ef72796ae5b2fecc76d49ba966
--! Message: resolvers notify

--! split: 1-resolvers-notify.sql
-- Resolver changes notify the proxies.
-- Why: a pooled backend keeps its owner's context between clients (docs/transaction-pooling.md),
-- and the context's values come from the resolvers when it is switched in. The proxies switch
-- every backend's context in again after any catalog notification; a resolver added, removed or
-- changed now sends one too, so its values reach the next checkout rather than the next owner
-- change. (Values that depend on data the resolver reads are bounded by the proxy's
-- context_max_age instead.) Same triggers as the catalog tables: one notification with an empty
-- payload per statement that changed a row.

do $$
begin
  execute
    'create or replace trigger notify_catalog_insert after insert on pgvpd_private.resolvers '
    'referencing new table as new_rows for each statement execute function pgvpd_private.notify_catalog(''position''); '
    'create or replace trigger notify_catalog_update after update on pgvpd_private.resolvers '
    'referencing old table as old_rows new table as new_rows for each statement execute function pgvpd_private.notify_catalog(''position''); '
    'create or replace trigger notify_catalog_delete after delete on pgvpd_private.resolvers '
    'referencing old table as old_rows for each statement execute function pgvpd_private.notify_catalog(''position''); '
    'create or replace trigger notify_catalog_truncate after truncate on pgvpd_private.resolvers '
    'for each statement execute function pgvpd_private.notify_catalog(''position'')';
end;
$$;
