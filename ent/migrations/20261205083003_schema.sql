-- Modify "bmcs" table
ALTER TABLE "bmcs" ADD COLUMN "credential_source" character varying NOT NULL DEFAULT 'operator';
