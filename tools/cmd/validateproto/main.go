// Command validateproto writes buf/validate/validate.proto from the descriptor
// compiled into the published protovalidate Go module, so buf can compile
// Carbide's protos without reaching the Buf Schema Registry.
//
// Usage: validateproto <output-dir>
package main

import (
	"fmt"
	"os"
	"path/filepath"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoprint"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "validateproto:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: validateproto <output-dir>")
	}
	fd, err := desc.WrapFile(validatepb.File_buf_validate_validate_proto)
	if err != nil {
		return fmt.Errorf("wrap descriptor: %w", err)
	}
	path := filepath.Join(args[0], fd.GetName())
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create output dir: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	printer := protoprint.Printer{Compact: false}
	if err := printer.PrintProtoFile(fd, f); err != nil {
		f.Close()
		return fmt.Errorf("print %s: %w", path, err)
	}
	return f.Close()
}
