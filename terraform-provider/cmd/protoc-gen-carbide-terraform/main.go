// Command protoc-gen-carbide-terraform is a protoc plugin that generates the
// Terraform provider's schemas and model conversions from the API's proto
// definitions (see internal/schemagen). buf generate runs it from
// buf.gen.yaml with strategy all, so that it sees every file at once.
package main

import (
	"google.golang.org/protobuf/compiler/protogen"

	"github.com/carbide-dev/carbide/terraform-provider/internal/schemagen"
)

func main() {
	protogen.Options{}.Run(schemagen.Generate)
}
