package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExamplesValidate runs `terraform validate` on every example of the
// documentation (examples/), with the provider built from this tree, so
// that an example that no longer matches the schema or its validators
// fails here.
func TestExamplesValidate(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bin")
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "terraform-provider-carbide"), "github.com/carbide-dev/carbide/terraform-provider")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the provider: %v\n%s", err, out)
	}
	rc := filepath.Join(t.TempDir(), "terraform.rc")
	if err := os.WriteFile(rc, fmt.Appendf(nil, `provider_installation {
  dev_overrides {
    "carbide-dev/carbide" = %q
  }
  direct {}
}
`, bin), 0o644); err != nil {
		t.Fatal(err)
	}
	// Each example: a directory of examples/resources or
	// examples/data-sources, or one file of examples/provider (each
	// configures the provider its own way).
	dirs, err := filepath.Glob("../../examples/*/*")
	if err != nil {
		t.Fatal(err)
	}
	var examples [][]string
	for _, dir := range dirs {
		if files, _ := filepath.Glob(filepath.Join(dir, "*.tf")); len(files) > 0 {
			examples = append(examples, files)
		}
	}
	providerFiles, _ := filepath.Glob("../../examples/provider/*.tf")
	for _, f := range providerFiles {
		examples = append(examples, []string{f})
	}
	if len(examples) < 6 {
		t.Fatalf("found only %d examples under examples/", len(examples))
	}
	for _, files := range examples {
		name, _ := filepath.Rel("../../examples", files[0])
		if len(files) > 1 || !strings.HasPrefix(name, "provider/") {
			name = filepath.Dir(name)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			work := t.TempDir()
			hasTerraformBlock := false
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				hasTerraformBlock = hasTerraformBlock || strings.Contains(string(b), "required_providers")
				if err := os.WriteFile(filepath.Join(work, filepath.Base(f)), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if !hasTerraformBlock {
				if err := os.WriteFile(filepath.Join(work, "versions.tf"), []byte(`terraform {
  required_providers {
    carbide = { source = "carbide-dev/carbide" }
  }
}
`), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(os.Getenv("TF_ACC_TERRAFORM_PATH"), "validate", "-no-color")
			cmd.Dir = work
			cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc) // the last one wins
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("terraform validate of examples/%s: %v\n%s", name, err, out)
			}
		})
	}
}
