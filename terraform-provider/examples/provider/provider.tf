terraform {
  required_providers {
    carbide = {
      source = "carbide-dev/carbide"
    }
  }
}

# Mutual TLS with a client certificate from Carbide's CA. Every attribute
# may instead come from its CARBIDE_* environment variable.
provider "carbide" {
  endpoint    = "https://carbide.example:1079"
  ca_cert     = "/etc/carbide/ca.crt"
  client_cert = "/etc/carbide/admin.crt"
  client_key  = "/etc/carbide/admin.key"
}
