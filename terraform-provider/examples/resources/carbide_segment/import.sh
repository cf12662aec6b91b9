# A segment is imported by its ID or its name.
terraform import carbide_segment.rack1 rack1
