package instances

import (
	"fmt"

	"github.com/carbide-dev/carbide/backend/internal/machines"
	"github.com/carbide-dev/carbide/ent"
	"github.com/carbide-dev/carbide/ent/instance"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var stateToProto = map[instance.State]instancev1.InstanceState{
	instance.StateProvisioning: instancev1.InstanceState_INSTANCE_STATE_PROVISIONING,
	instance.StateRunning:      instancev1.InstanceState_INSTANCE_STATE_RUNNING,
	instance.StateReleasing:    instancev1.InstanceState_INSTANCE_STATE_RELEASING,
	instance.StateReleased:     instancev1.InstanceState_INSTANCE_STATE_RELEASED,
	instance.StateFailed:       instancev1.InstanceState_INSTANCE_STATE_FAILED,
}

// StateToProto converts a stored instance state to its API enum.
func StateToProto(s instance.State) instancev1.InstanceState { return stateToProto[s] }

// StateFromProto converts an API instance state to the stored one.
func StateFromProto(s instancev1.InstanceState) (instance.State, bool) {
	for k, v := range stateToProto {
		if v == s {
			return k, true
		}
	}
	return "", false
}

// WipeModeToProto converts a stored wipe mode to its API enum.
func WipeModeToProto(m instance.WipeMode) instancev1.WipeMode {
	switch m {
	case instance.WipeModeQuick:
		return instancev1.WipeMode_WIPE_MODE_QUICK
	case instance.WipeModeFull:
		return instancev1.WipeMode_WIPE_MODE_FULL
	}
	return instancev1.WipeMode_WIPE_MODE_UNSPECIFIED
}

// WipeModeFromProto converts an API wipe mode to the stored one; ok is
// false for WIPE_MODE_UNSPECIFIED and unknown values.
func WipeModeFromProto(m instancev1.WipeMode) (mode instance.WipeMode, ok bool) {
	switch m {
	case instancev1.WipeMode_WIPE_MODE_QUICK:
		return instance.WipeModeQuick, true
	case instancev1.WipeMode_WIPE_MODE_FULL:
		return instance.WipeModeFull, true
	}
	return "", false
}

// ToProto converts an instance; m is its machine, or nil if it has none
// (or it was not read). The instance's Task is the machine's current step
// when that step serves this instance.
func ToProto(inst *ent.Instance, m *ent.Machine) (*instancev1.Instance, error) {
	pi := &instancev1.Instance{
		Id:                inst.ID.String(),
		Hostname:          inst.Hostname,
		UserData:          inst.UserData,
		SshAuthorizedKeys: inst.SSHAuthorizedKeys,
		Labels:            inst.Labels,
		State:             StateToProto(inst.State),
		FailureReason:     inst.FailureReason,
		Address:           inst.Address,
		WipeMode:          WipeModeToProto(inst.WipeMode),
		CreateTime:        timestamppb.New(inst.CreateTime),
		UpdateTime:        timestamppb.New(inst.UpdateTime),
	}
	if inst.ImageID != uuid.Nil {
		pi.ImageId = inst.ImageID.String()
	}
	if inst.MachineID != nil {
		pi.MachineId = inst.MachineID.String()
	}
	if inst.RequestID != nil {
		pi.RequestId = *inst.RequestID
	}
	if inst.RunningTime != nil {
		pi.RunningTime = timestamppb.New(*inst.RunningTime)
	}
	if inst.Selector != nil { // empty, not nil, for an empty selector
		sel := &instancev1.Selector{}
		if err := proto.Unmarshal(inst.Selector, sel); err != nil {
			return nil, fmt.Errorf("decode selector of instance %s: %w", inst.ID, err)
		}
		pi.Selector = sel
	}
	if m != nil && inst.MachineID != nil && m.ID == *inst.MachineID &&
		m.TaskInstanceID != nil && *m.TaskInstanceID == inst.ID {
		pi.Task = machines.TaskToProto(m)
	}
	return pi, nil
}

var firmwareNames = map[instancev1.Firmware]string{
	instancev1.Firmware_FIRMWARE_BIOS: "bios",
	instancev1.Firmware_FIRMWARE_UEFI: "uefi",
}

// ImageToProto converts an image.
func ImageToProto(img *ent.Image) (*instancev1.Image, error) {
	boot := &instancev1.Image{}
	if err := proto.Unmarshal(img.Boot, boot); err != nil {
		return nil, fmt.Errorf("decode boot of image %s: %w", img.ID, err)
	}
	pi := &instancev1.Image{
		Id:           img.ID.String(),
		Name:         img.Name,
		Version:      img.Version,
		Description:  img.Description,
		Architecture: img.Architecture,
		Boot:         boot.Boot,
		Deprecated:   img.Deprecated,
		CreateTime:   timestamppb.New(img.CreateTime),
		UpdateTime:   timestamppb.New(img.UpdateTime),
	}
	for _, name := range img.Firmware {
		for f, n := range firmwareNames {
			if n == name {
				pi.Firmware = append(pi.Firmware, f)
			}
		}
	}
	return pi, nil
}
