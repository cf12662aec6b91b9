-- Modify "leases" table
ALTER TABLE "leases" ADD COLUMN "address_num" bigint NOT NULL DEFAULT 0;
-- Create index "lease_segment_id_address_num" to table: "leases"
CREATE INDEX "lease_segment_id_address_num" ON "leases" ("segment_id", "address_num");
