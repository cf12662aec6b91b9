-- Modify "instances" table
ALTER TABLE "instances" DROP CONSTRAINT "instances_images_instances", ALTER COLUMN "image_id" DROP NOT NULL, ADD CONSTRAINT "instances_images_instances" FOREIGN KEY ("image_id") REFERENCES "images" ("id") ON UPDATE NO ACTION ON DELETE SET NULL;
