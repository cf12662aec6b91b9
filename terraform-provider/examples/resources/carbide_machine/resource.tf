# Register a machine by the MAC addresses of its NICs before it first boots,
# with the BMC that Carbide powers it through.
resource "carbide_machine" "node1" {
  macs     = ["52:54:00:12:34:56", "52:54:00:12:34:57"]
  hostname = "node1"
  labels = {
    rack = "12"
    role = "db"
  }

  bmc = {
    address  = "10.0.12.101"
    protocol = "ipmi"
    username = "admin"
    # Write-only: sent to the API, never stored in the Terraform state.
    password = var.bmc_password
    # Change to send a rotated password.
    password_version = "1"
  }
}

# Manage a machine that DHCP enrolled already.
resource "carbide_machine" "node2" {
  macs        = ["52:54:00:12:34:60"]
  adopt       = true
  maintenance = true
}

variable "bmc_password" {
  type      = string
  sensitive = true
}
