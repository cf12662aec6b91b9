module github.com/carbide-dev/carbide/edge

go 1.26.8
