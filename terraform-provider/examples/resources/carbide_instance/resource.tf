# Any Ready machine with at least 8 CPUs in rack 12, installed with an
# image; apply returns once the instance runs.
resource "carbide_instance" "web" {
  hostname = "web-1"
  image_id = var.image_id # e.g. carbide_os_image.debian.id
  selector = {
    labels   = { rack = "12" }
    min_cpus = 8
  }
  ssh_authorized_keys = [var.ssh_public_key]
  user_data           = <<-EOT
    #cloud-config
    packages: [nginx]
  EOT
  labels = {
    app = "web"
  }

  # Destroy waits until the machine is wiped and Ready again.
  wait_for_cleaning = true

  timeouts = {
    create = "20m"
    delete = "30m"
  }
}

# On a given machine.
resource "carbide_instance" "db" {
  hostname   = "db-1"
  image_id   = var.image_id
  machine_id = var.machine_id # e.g. carbide_machine.node1.id
  wipe_mode  = "full"
}

output "web_address" {
  value = carbide_instance.web.address
}

variable "image_id" {
  type = string
}

variable "machine_id" {
  type = string
}

variable "ssh_public_key" {
  type        = string
  description = "An SSH public key, such as the content of ~/.ssh/id_ed25519.pub."
}
