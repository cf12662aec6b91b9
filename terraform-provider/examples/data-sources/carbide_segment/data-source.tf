# One segment, by its name (or by id).
data "carbide_segment" "rack1" {
  name = "rack1"
}

output "rack1_prefix" {
  value = data.carbide_segment.rack1.prefix
}
