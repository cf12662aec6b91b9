# An instance is imported by its ID.
terraform import carbide_instance.web 7d7c1a0e-3b0c-4d8e-9a51-6f2f6a2b9c11
