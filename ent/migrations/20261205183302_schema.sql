-- Modify "leases" table
ALTER TABLE "leases" ADD COLUMN "expiry_noted" boolean NOT NULL DEFAULT false;
-- Create index "lease_expiry_noted_expire_time" to table: "leases"
CREATE INDEX "lease_expiry_noted_expire_time" ON "leases" ("expiry_noted", "expire_time");
-- Modify "segments" table
ALTER TABLE "segments" ADD COLUMN "dns_records" jsonb NOT NULL DEFAULT '[]';
