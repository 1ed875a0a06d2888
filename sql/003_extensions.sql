-- Digdag's first migration needs uuid-ossp; created by the superuser so the digdag role
-- stays NOSUPERUSER. Idempotent. Variables: db_name.
\connect :"db_name"
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
