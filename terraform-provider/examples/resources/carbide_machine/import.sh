# A machine is imported by its ID.
terraform import carbide_machine.node1 2a3024ae-b14a-4dbc-826e-2891ccf304f6
