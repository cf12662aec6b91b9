-- Create index "lease_mac" to table: "leases"
CREATE INDEX "lease_mac" ON "leases" ("mac");
-- Create index "nic_machine_id" to table: "nics"
CREATE INDEX "nic_machine_id" ON "nics" ("machine_id");
