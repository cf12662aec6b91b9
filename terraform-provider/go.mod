module github.com/carbide-dev/carbide/terraform-provider

go 1.26.8
