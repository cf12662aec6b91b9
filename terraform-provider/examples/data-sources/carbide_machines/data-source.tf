# Every ready machine of rack 12.
data "carbide_machines" "rack12" {
  states = ["ready"]
  labels = {
    rack = "12"
  }
}

output "rack12_ready" {
  value = data.carbide_machines.rack12.ids
}
