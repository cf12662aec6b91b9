-- Create "images" table
CREATE TABLE "images" ("id" uuid NOT NULL, "create_time" timestamptz NOT NULL, "update_time" timestamptz NOT NULL, "name" character varying NOT NULL, "version" character varying NOT NULL, "description" character varying NOT NULL DEFAULT '', "architecture" character varying NOT NULL, "firmware" jsonb NOT NULL, "boot" bytea NOT NULL, "deprecated" boolean NOT NULL DEFAULT false, PRIMARY KEY ("id"));
-- Create index "image_name_version" to table: "images"
CREATE UNIQUE INDEX "image_name_version" ON "images" ("name", "version");
-- Modify "machines" table
ALTER TABLE "machines" ADD COLUMN "task_step" character varying NULL, ADD COLUMN "task_instance_id" uuid NULL, ADD COLUMN "task_start_time" timestamptz NULL, ADD COLUMN "task_deadline" timestamptz NULL, ADD COLUMN "task_done" bigint NOT NULL DEFAULT 0, ADD COLUMN "task_total" bigint NOT NULL DEFAULT 0, ADD COLUMN "task_message" character varying NOT NULL DEFAULT '', ADD COLUMN "task_wipe_mode" character varying NULL;
-- Create index "machine_task_deadline" to table: "machines"
CREATE INDEX "machine_task_deadline" ON "machines" ("task_deadline");
-- Create "instances" table
CREATE TABLE "instances" ("id" uuid NOT NULL, "create_time" timestamptz NOT NULL, "update_time" timestamptz NOT NULL, "hostname" character varying NOT NULL, "user_data" bytea NULL, "ssh_authorized_keys" jsonb NOT NULL, "labels" jsonb NOT NULL, "selector" bytea NULL, "state" character varying NOT NULL DEFAULT 'provisioning', "failure_reason" character varying NOT NULL DEFAULT '', "address" character varying NOT NULL DEFAULT '', "wipe_mode" character varying NOT NULL DEFAULT 'quick', "request_id" character varying NULL, "running_time" timestamptz NULL, "release_time" timestamptz NULL, "state_time" timestamptz NOT NULL, "image_id" uuid NOT NULL, "machine_id" uuid NULL, PRIMARY KEY ("id"), CONSTRAINT "instances_images_instances" FOREIGN KEY ("image_id") REFERENCES "images" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "instances_machines_instances" FOREIGN KEY ("machine_id") REFERENCES "machines" ("id") ON UPDATE NO ACTION ON DELETE SET NULL);
-- Create index "instance_active_machine" to table: "instances"
CREATE UNIQUE INDEX "instance_active_machine" ON "instances" ("machine_id") WHERE ((state)::text = ANY ((ARRAY['provisioning'::character varying, 'running'::character varying, 'releasing'::character varying])::text[]));
-- Create index "instance_create_time" to table: "instances"
CREATE INDEX "instance_create_time" ON "instances" ("create_time");
-- Create index "instance_request_id" to table: "instances"
CREATE UNIQUE INDEX "instance_request_id" ON "instances" ("request_id");
-- Create index "instance_state" to table: "instances"
CREATE INDEX "instance_state" ON "instances" ("state");
