//go:build linux

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestRunPrintsInventory(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--root", "../../internal/scout/testdata/vm"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	inv := &machinev1.Inventory{}
	if err := protojson.Unmarshal(stdout.Bytes(), inv); err != nil {
		t.Fatalf("output is not an inventory: %v\n%s", err, stdout.String())
	}
	if inv.GetCpu().GetThreads() != 4 || len(inv.GetNics()) != 1 || inv.GetNics()[0].GetMac() != "52:54:00:aa:bb:cc" {
		t.Errorf("inventory %v is not the one of testdata/vm", inv)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %s", stderr.String())
	}
}

func TestRunIncompleteAndErrors(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--root", t.TempDir()}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), "inventory incomplete") {
		t.Errorf("stderr %q does not say the inventory is incomplete", stderr.String())
	}
	if err := run(context.Background(), []string{"extra"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("got %v, want an error for the extra argument", err)
	}
}
