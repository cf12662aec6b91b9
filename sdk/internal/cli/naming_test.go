package cli

import (
	"testing"

	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func TestVerbs(t *testing.T) {
	t.Parallel()
	method := func(fd protoreflect.FileDescriptor, svc, m string) protoreflect.MethodDescriptor {
		return fd.Services().ByName(protoreflect.Name(svc)).Methods().ByName(protoreflect.Name(m))
	}
	tests := map[string]struct {
		md       protoreflect.MethodDescriptor
		noun     string
		verb     string
		argument string
	}{
		"list machines":      {method(machinev1.File_carbide_machine_v1_machine_proto, "MachineService", "ListMachines"), "machine", "list", ""},
		"get machine":        {method(machinev1.File_carbide_machine_v1_machine_proto, "MachineService", "GetMachine"), "machine", "get", "<id|hostname>"},
		"machine history":    {method(machinev1.File_carbide_machine_v1_machine_proto, "MachineService", "ListMachineTransitions"), "machine", "list-transitions", "<id|hostname>"},
		"update machine":     {method(machinev1.File_carbide_machine_v1_machine_proto, "MachineService", "UpdateMachine"), "machine", "update", "<id|hostname>"},
		"create machine":     {method(machinev1.File_carbide_machine_v1_machine_proto, "MachineService", "CreateMachine"), "machine", "create", ""},
		"segment leases":     {method(networkv1.File_carbide_network_v1_address_proto, "AddressService", "ListLeases"), "address", "list-leases", "<id|name>"},
		"allocate address":   {method(networkv1.File_carbide_network_v1_address_proto, "AddressService", "AllocateAddress"), "address", "allocate", "<id|name>"},
		"list BMCs":          {method(bmcv1.File_carbide_bmc_v1_bmc_proto, "BMCService", "ListBMCs"), "bmc", "list", ""},
		"set BMC":            {method(bmcv1.File_carbide_bmc_v1_bmc_proto, "BMCService", "SetBMC"), "bmc", "set", "<id|hostname>"},
		"segment credential": {method(bmcv1.File_carbide_bmc_v1_bmc_proto, "BMCService", "GetSegmentCredentials"), "bmc", "get-segment-credentials", "<id|name>"},
		"create image":       {method(instancev1.File_carbide_instance_v1_image_proto, "ImageService", "CreateImage"), "image", "create", ""},
		"get image":          {method(instancev1.File_carbide_instance_v1_image_proto, "ImageService", "GetImage"), "image", "get", "<id|name[:version]>"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newSpec(tc.md)
			if s.noun != tc.noun || s.verb != tc.verb || s.argName() != tc.argument {
				t.Errorf("%s: %s %s %s; want %s %s %s", tc.md.FullName(), s.noun, s.verb, s.argName(), tc.noun, tc.verb, tc.argument)
			}
		})
	}
}

func TestKebabAndSingular(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"EnrollBMC": "enroll-bmc", "GetBootConfig": "get-boot-config", "ListIdentityConflicts": "list-identity-conflicts", "LeaseBatch": "lease-batch"} {
		if got := kebab(in); got != want {
			t.Errorf("kebab(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"labels": "label", "macs": "mac", "states": "state", "relay-addresses": "relay-address", "dns-servers": "dns-server", "address": "address", "firmware": "firmware"} {
		if got := singular(in); got != want {
			t.Errorf("singular(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseValues(t *testing.T) {
	t.Parallel()
	state := machinev1.MachineState(0).Descriptor()
	for in, want := range map[string]machinev1.MachineState{"ready": machinev1.MachineState_MACHINE_STATE_READY, "READY": machinev1.MachineState_MACHINE_STATE_READY, "MACHINE_STATE_FAILED": machinev1.MachineState_MACHINE_STATE_FAILED, "8": machinev1.MachineState_MACHINE_STATE_MAINTENANCE} {
		if got, err := parseEnum(state, in); err != nil || machinev1.MachineState(got) != want {
			t.Errorf("parseEnum(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "unspecified", "0", "sleeping"} {
		if _, err := parseEnum(state, bad); err == nil {
			t.Errorf("parseEnum(%q) succeeded", bad)
		}
	}
	for in, want := range map[string]uint64{"0": 0, "512": 512, "4KiB": 4096, "64GiB": 64 << 30, "2TiB": 2 << 40} {
		if got, err := parseSize(in, 64); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "1.5GiB", "GiB", "9223372036854775807KiB"} {
		if _, err := parseSize(bad, 63); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}
