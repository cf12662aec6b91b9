# An image is imported by its ID or its name:version.
terraform import carbide_os_image.debian debian:12
