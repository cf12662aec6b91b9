package carbide_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"github.com/carbide-dev/carbide/sdk/carbide"
)

// Connect with the CLI's config file: the current context of
// ~/.config/carbide/config.yaml (or $CARBIDE_CONFIG), with CARBIDE_*
// environment variables on top.
func Example() {
	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		log.Fatal(err) // lists every problem of the config
	}
	ctx := context.Background()
	_, err = c.Machines.GetMachine(ctx, connect.NewRequest(&machinev1.GetMachineRequest{Id: "00000000-0000-4000-8000-000000000000"}))
	switch {
	case carbide.IsNotFound(err):
		fmt.Println("connected; no such machine")
	case err != nil:
		log.Fatal(err) // e.g. "unauthenticated: ..." with a wrong certificate
	}
	// Output: connected; no such machine
}

// Create a segment; a bad request names each field to fix.
func Example_createSegment() {
	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()

	resp, err := c.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{
		Segment: &networkv1.Segment{
			Name:    "rack-1",
			Prefix:  "10.20.0.0/24",
			Gateway: "10.20.0.1",
			Ranges:  []*networkv1.AddressRange{{Start: "10.20.0.100", End: "10.20.0.199"}},
		},
	}))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created", resp.Msg.GetSegment().GetName(), resp.Msg.GetSegment().GetPrefix())

	_, err = c.Segments.CreateSegment(ctx, connect.NewRequest(&networkv1.CreateSegmentRequest{
		Segment: &networkv1.Segment{Name: "Rack 2", Prefix: "10.21.0.0/33"},
	}))
	if e, ok := carbide.AsError(err); ok && carbide.IsInvalidArgument(err) {
		for _, v := range e.Violations {
			fmt.Printf("fix %s (%s)\n", v.Field, v.Rule)
		}
	}
	// Output:
	// created rack-1 10.20.0.0/24
	// fix segment.name (string.pattern)
	// fix segment.prefix (string.ipv4_prefix)
}

// List machines page by page with an iterator: here the machines of one
// rack, by label.
func ExampleClient_AllMachines() {
	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for i, mac := range []string{"52:54:00:e0:00:01", "52:54:00:e0:00:02"} {
		if _, err := c.Machines.CreateMachine(ctx, connect.NewRequest(&machinev1.CreateMachineRequest{
			Hostname: fmt.Sprintf("node-%d", i+1),
			Macs:     []string{mac},
			Labels:   map[string]string{"rack": "r7"},
		})); err != nil {
			log.Fatal(err)
		}
	}

	n := 0
	for m, err := range c.AllMachines(ctx, &machinev1.ListMachinesRequest{Labels: map[string]string{"rack": "r7"}}) {
		if err != nil {
			log.Fatal(err)
		}
		n++
		_ = m.GetHostname()
	}
	fmt.Println("machines in rack r7:", n)
	// Output: machines in rack r7: 2
}

// Create an instance and wait until it runs, printing what the machine
// does meanwhile; a failure ends the wait at once with its reason.
func ExampleClient_WaitInstanceRunning() {
	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	resp, err := c.Instances.CreateInstance(ctx, connect.NewRequest(&instancev1.CreateInstanceRequest{
		RequestId: "web-1-2026-12-06", // a retry returns the same instance
		Hostname:  "web-1",
		ImageId:   "0b6c1d2e-7f3a-4c5b-9d8e-1a2b3c4d5e6f",
		Target: &instancev1.CreateInstanceRequest_Selector{Selector: &instancev1.Selector{
			Labels:  map[string]string{"pool": "web"},
			MinCpus: 8,
		}},
		SshAuthorizedKeys: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@example"},
	}))
	if err != nil {
		log.Fatal(err)
	}
	inst, err := c.WaitInstanceRunning(ctx, resp.Msg.GetInstance().GetId(),
		carbide.WithProgress(func(p carbide.Progress) { log.Println(p) }))
	if err != nil {
		log.Fatal(err) // a *carbide.StateError with the reason when the instance failed
	}
	fmt.Println(inst.GetHostname(), "runs at", inst.GetAddress())
}

// Delete an instance and wait until its machine is wiped and Ready.
func ExampleClient_WaitInstanceDeleted() {
	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	id := "6a1f4f4e-2b1c-4e1d-8f00-3c2d1b0a9e8f"
	if _, err := c.Instances.DeleteInstance(ctx, connect.NewRequest(&instancev1.DeleteInstanceRequest{Id: id})); err != nil {
		log.Fatal(err)
	}
	if err := c.WaitInstanceDeleted(ctx, id, carbide.WaitCleaned()); err != nil {
		log.Fatal(err)
	}
}

// Wait for a machine to finish discovery.
func ExampleClient_WaitMachineState() {
	cfg, err := carbide.LoadConfig(carbide.DefaultConfigPath(), "")
	if err != nil {
		log.Fatal(err)
	}
	c, err := cfg.NewClient()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m, err := c.WaitMachineState(ctx, "3f2e1d0c-0000-4000-8000-000000000001",
		[]machinev1.MachineState{machinev1.MachineState_MACHINE_STATE_READY})
	if err != nil {
		log.Fatal(err) // a *carbide.StateError when the machine failed its checks
	}
	fmt.Println(m.GetHostname(), "is ready")
}

// A config file with named contexts. File paths in it are relative to the
// file's directory.
func ExampleReadConfigFile() {
	dir, err := os.MkdirTemp("", "carbide-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "config.yaml")
	err = os.WriteFile(path, []byte(`current-context: lab
contexts:
  lab:
    endpoint: https://carbide.lab.example:1079
    ca-cert: pki/ca.crt
    client-cert: pki/admin.crt
    client-key: pki/admin.key
  prod:
    endpoint: https://carbide.example:1079
    token-command: idp-cli token --audience carbide
`), 0o600)
	if err != nil {
		log.Fatal(err)
	}

	f, err := carbide.ReadConfigFile(path)
	if err != nil {
		log.Fatal(err)
	}
	lab := f.Contexts[f.CurrentContext]
	rel, _ := filepath.Rel(dir, lab.ClientCert)
	fmt.Println(f.CurrentContext, lab.Endpoint, rel)
	fmt.Println("prod uses a token command:", f.Contexts["prod"].TokenCommand != "")
	// Output:
	// lab https://carbide.lab.example:1079 pki/admin.crt
	// prod uses a token command: true
}

// Validate reports every problem at once.
func ExampleConfig_Validate() {
	cfg := carbide.Config{
		ClientCert: "admin.crt",
		Token:      "eyJhbGciOi...",
		Protocol:   "http3",
	}
	fmt.Println(cfg.Validate())
	// Output:
	// invalid carbide config: no endpoint: set endpoint in the config file, CARBIDE_ENDPOINT or --endpoint, e.g. https://carbide.example:1079
	// client-cert is set without client-key: give both
	// client-cert: stat admin.crt: no such file or directory
	// protocol "http3": want connect, grpc or grpc-web
}
