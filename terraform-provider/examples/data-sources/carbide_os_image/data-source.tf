# One image, by its name and version (or by id).
data "carbide_os_image" "debian" {
  name    = "debian"
  version = "12"
}

output "debian_image_id" {
  value = data.carbide_os_image.debian.id
}
