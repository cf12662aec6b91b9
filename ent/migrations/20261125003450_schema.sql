-- Modify "machines" table
ALTER TABLE "machines" ADD COLUMN "hardware_id" character varying NULL;
-- Create index "machines_hardware_id_key" to table: "machines"
CREATE UNIQUE INDEX "machines_hardware_id_key" ON "machines" ("hardware_id");
