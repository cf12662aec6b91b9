module github.com/carbide-dev/carbide/sdk

go 1.26.8
