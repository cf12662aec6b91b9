# A complete configuration: one instance on any Ready machine that the
# selector matches, reachable over SSH with the given key. `terraform
# apply` returns once the instance runs; `terraform destroy` returns once
# its machine is wiped and Ready again. The VM lab's instance test
# (edge/e2e TestInstanceLifecycle) applies and destroys this directory.
terraform {
  required_version = ">= 1.11"
  required_providers {
    carbide = {
      source = "carbide-dev/carbide"
    }
  }
}

# A variable left null falls back to its CARBIDE_* environment variable.
provider "carbide" {
  endpoint    = var.endpoint
  ca_cert     = var.ca_cert
  client_cert = var.client_cert
  client_key  = var.client_key
}

resource "carbide_instance" "this" {
  hostname = var.hostname
  image_id = var.image_id
  selector = {
    labels           = var.machine_labels
    min_cpus         = var.min_cpus
    min_memory_bytes = var.min_memory_bytes
    min_disk_bytes   = var.min_disk_bytes
    segment_id       = var.segment_id
  }
  ssh_authorized_keys = var.ssh_authorized_keys
  user_data           = var.user_data

  # Destroy waits until the machine is wiped and Ready again.
  wait_for_cleaning = true

  timeouts = {
    create = var.create_timeout
    delete = var.delete_timeout
  }
}

output "id" {
  description = "The instance's ID."
  value       = carbide_instance.this.id
}

output "machine_id" {
  description = "The machine the selector chose."
  value       = carbide_instance.this.machine_id
}

output "address" {
  description = "The instance's IPv4 address: ssh debian@<address>."
  value       = carbide_instance.this.address
}

output "state" {
  description = "The instance's state once apply returns: running."
  value       = carbide_instance.this.state
}
