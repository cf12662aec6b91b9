-- Drop index "instance_active_machine" from table: "instances"
DROP INDEX "instance_active_machine";
-- Modify "instances" table
ALTER TABLE "instances" DROP CONSTRAINT "instances_images_instances", ALTER COLUMN "image_id" DROP NOT NULL, ADD CONSTRAINT "instances_images_instances" FOREIGN KEY ("image_id") REFERENCES "images" ("id") ON UPDATE NO ACTION ON DELETE SET NULL;
-- Create index "instance_active_machine" to table: "instances"
CREATE UNIQUE INDEX "instance_active_machine" ON "instances" ("machine_id") WHERE ((state)::text = ANY ((ARRAY['provisioning'::character varying, 'running'::character varying, 'releasing'::character varying])::text[]));
