-- Create index "instance_hostname" to table: "instances"
CREATE INDEX "instance_hostname" ON "instances" ("hostname");
-- Create index "machine_hostname" to table: "machines"
CREATE INDEX "machine_hostname" ON "machines" ("hostname");
