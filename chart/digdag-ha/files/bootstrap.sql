-- Generated from sql/*.sql (test/unit/chart.test.ts keeps them equal): the migration Job's
-- bootstrap-db init container runs it as the PostgreSQL superuser. The password comes from
-- the environment (\getenv, psql 15), never a command line.
\getenv db_password DB_PASSWORD
-- The role Digdag connects as: it may log in and own its database, nothing more.
-- Idempotent; the password follows the generated secret. Variables: db_user, db_password.
SELECT format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'db_user', :'db_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'db_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'db_user', :'db_password') \gexec
-- Digdag's database, owned by its role. Idempotent. Variables: db_name, db_user.
SELECT format('CREATE DATABASE %I WITH OWNER %I ENCODING %L TEMPLATE template0', :'db_name', :'db_user', 'UTF8')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db_name') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db_name', :'db_user') \gexec
-- Digdag's first migration needs uuid-ossp; created by the superuser so the digdag role
-- stays NOSUPERUSER. Idempotent. Variables: db_name.
\connect :"db_name"
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
