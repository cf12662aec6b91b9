# A rack's network: DHCP leases from one range, a fixed address for a known
# MAC, and static DNS records in the rack's domain.
resource "carbide_segment" "rack1" {
  name           = "rack1"
  prefix         = "10.1.0.0/24"
  gateway        = "10.1.0.1"
  dns_servers    = ["10.1.0.2", "10.1.0.3"]
  ntp_servers    = ["10.1.0.2"]
  domain         = "rack1.example.net"
  lease_duration = "2h"

  ranges = [
    { start = "10.1.0.100", end = "10.1.0.199" },
  ]

  reservations = [
    { mac = "52:54:00:12:34:56", address = "10.1.0.10" },
  ]

  dns_records = [
    { name = "www", type = "cname", value = "web.example.net." },
    { name = "_ldap._tcp", type = "srv", ttl = 300, value = "10 5 389 ldap1.example.net." },
  ]
}
