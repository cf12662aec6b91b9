# One machine, by the MAC address of one of its NICs (or by id or hostname).
data "carbide_machine" "node1" {
  mac = "52:54:00:12:34:56"
}

output "node1_state" {
  value = data.carbide_machine.node1.state
}
