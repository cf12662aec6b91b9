package instances

import (
	"testing"
	"time"

	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/instance"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	"github.com/google/uuid"
)

func TestFits(t *testing.T) {
	t.Parallel()
	inv := &machinev1.Inventory{
		Cpu:         &machinev1.CPUInfo{Sockets: 2, Cores: 16, Threads: 32},
		MemoryBytes: 64 << 30,
		Disks:       []*machinev1.Disk{{Name: "sda", SizeBytes: 100 << 30}, {Name: "sdb", SizeBytes: 2000 << 30}},
	}
	tests := map[string]struct {
		sel  *instancev1.Selector
		want bool
	}{
		"nothing asked":         {&instancev1.Selector{}, true},
		"logical CPUs, exactly": {&instancev1.Selector{MinCpus: 32}, true},
		"more CPUs":             {&instancev1.Selector{MinCpus: 33}, false},
		"memory, exactly":       {&instancev1.Selector{MinMemoryBytes: 64 << 30}, true},
		"more memory":           {&instancev1.Selector{MinMemoryBytes: 64<<30 + 1}, false},
		"the bigger disk":       {&instancev1.Selector{MinDiskBytes: 1000 << 30}, true},
		"no disk that big":      {&instancev1.Selector{MinDiskBytes: 3000 << 30}, false},
		"all at once":           {&instancev1.Selector{MinCpus: 8, MinMemoryBytes: 8 << 30, MinDiskBytes: 2000 << 30}, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := Fits(inv, tc.sel); got != tc.want {
				t.Errorf("Fits(%v) = %v, want %v", tc.sel, got, tc.want)
			}
		})
	}
	if Fits(&machinev1.Inventory{}, &instancev1.Selector{MinCpus: 1}) {
		t.Error("an empty inventory fits a selector that asks for a CPU")
	}
}

func TestToProtoTask(t *testing.T) {
	t.Parallel()
	id, other, mid := uuid.New(), uuid.New(), uuid.New()
	step, now := "power_on", time.Now().UTC()
	inst := &ent.Instance{ID: id, MachineID: &mid, State: instance.StateProvisioning, WipeMode: instance.WipeModeFull}
	m := &ent.Machine{ID: mid, TaskStep: &step, TaskInstanceID: &id, TaskStartTime: &now, TaskDeadline: &now, TaskDone: 3, TaskTotal: 9}
	pi, err := ToProto(inst, m)
	if err != nil {
		t.Fatal(err)
	}
	if task := pi.GetTask(); task.GetStep() != step || task.GetInstanceId() != id.String() || task.GetDone() != 3 || task.GetTotal() != 9 {
		t.Errorf("task = %v", task)
	}
	if pi.GetImageId() != "" || pi.GetMachineId() != mid.String() || pi.GetWipeMode() != instancev1.WipeMode_WIPE_MODE_FULL {
		t.Errorf("instance = %v", pi)
	}
	// A step that serves another instance is not this one's.
	m.TaskInstanceID = &other
	if pi, err = ToProto(inst, m); err != nil || pi.GetTask() != nil {
		t.Errorf("task of another instance shown: %v, %v", pi.GetTask(), err)
	}
}
