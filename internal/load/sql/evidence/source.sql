-- The database the pack was read from and the transaction's snapshot time.
SELECT current_database(),
       current_setting('server_version'),
       now(),
       (SELECT coalesce(max(version), 0) FROM schema_migrations)
