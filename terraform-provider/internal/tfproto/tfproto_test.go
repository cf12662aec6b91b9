package tfproto

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
	networkv1 "github.com/carbide-dev/carbide/gen/carbide/network/v1"
)

func TestScalarsKeepEquivalentPriors(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		got, want types.String
	}{
		"zero is null":              {String(types.StringNull(), ""), types.StringNull()},
		"zero after unknown":        {String(types.StringUnknown(), ""), types.StringNull()},
		"configured empty kept":     {String(types.StringValue(""), ""), types.StringValue("")},
		"value":                     {String(types.StringNull(), "a"), types.StringValue("a")},
		"server value wins":         {String(types.StringValue("a"), "b"), types.StringValue("b")},
		"fold keeps case":           {StringFold(types.StringValue("52:54:00:AA:00:01"), "52:54:00:aa:00:01"), types.StringValue("52:54:00:AA:00:01")},
		"fold takes other values":   {StringFold(types.StringValue("52:54:00:AA:00:01"), "52:54:00:aa:00:02"), types.StringValue("52:54:00:aa:00:02")},
		"duration short form":       {Duration(types.StringNull(), durationpb.New(time.Hour)), types.StringValue("1h")},
		"duration as written":       {Duration(types.StringValue("60m"), durationpb.New(time.Hour)), types.StringValue("60m")},
		"duration changed":          {Duration(types.StringValue("60m"), durationpb.New(90*time.Second)), types.StringValue("1m30s")},
		"duration unset":            {Duration(types.StringValue("1h"), nil), types.StringNull()},
		"timestamp utc":             {Timestamp(types.StringNull(), timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))), types.StringValue("2026-01-02T03:04:05Z")},
		"timestamp same instant":    {Timestamp(types.StringValue("2026-01-02T04:04:05+01:00"), timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))), types.StringValue("2026-01-02T04:04:05+01:00")},
		"enum name":                 {NewEnum(machinev1.MachineState(0).Descriptor()).String(types.StringNull(), 3), types.StringValue("ready")},
		"enum zero is null":         {NewEnum(machinev1.MachineState(0).Descriptor()).String(types.StringNull(), 0), types.StringNull()},
		"enum acronym prefix":       {NewEnum(networkv1.DNSRecordType(0).Descriptor()).String(types.StringNull(), 3), types.StringValue("srv")},
		"enum unknown number shown": {NewEnum(networkv1.DNSRecordType(0).Descriptor()).String(types.StringNull(), 42), types.StringValue("42")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if !tc.got.Equal(tc.want) {
				t.Errorf("got %s, want %s", tc.got, tc.want)
			}
		})
	}
}

func TestNumbersAndBools(t *testing.T) {
	t.Parallel()
	if got := Int64(types.Int64Null(), 0); !got.IsNull() {
		t.Errorf("Int64(null, 0) = %s, want null", got)
	}
	if got := Int64(types.Int64Value(0), 0); !got.Equal(types.Int64Value(0)) {
		t.Errorf("Int64(0, 0) = %s, want 0", got)
	}
	if got := Bool(types.BoolNull(), false); !got.IsNull() {
		t.Errorf("Bool(null, false) = %s, want null", got)
	}
	if got := Bool(types.BoolValue(false), false); !got.Equal(types.BoolValue(false)) {
		t.Errorf("Bool(false, false) = %s, want false", got)
	}
	if got := Bool(types.BoolNull(), true); !got.Equal(types.BoolValue(true)) {
		t.Errorf("Bool(null, true) = %s, want true", got)
	}
}

func TestEnumNumber(t *testing.T) {
	t.Parallel()
	e := NewEnum(machinev1.MachineState(0).Descriptor())
	if n, d := e.Number(types.StringValue("maintenance"), "state"); d.HasError() || n != 8 {
		t.Errorf("Number(maintenance) = %d, %v; want 8", n, d)
	}
	if n, d := e.Number(types.StringNull(), "state"); d.HasError() || n != 0 {
		t.Errorf("Number(null) = %d, %v; want 0", n, d)
	}
	_, d := e.Number(types.StringValue("READY"), "state")
	if !d.HasError() || d[0].Detail() != `state must be one of discovered, inventoried, ready, provisioning, assigned, cleaning, failed, maintenance, not "READY".` {
		t.Errorf("Number(READY) diagnostics = %v, want an error listing the names", d)
	}
}

func TestListsAndMaps(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	empty, _ := types.ListValue(types.StringType, nil)
	l, d := List(ctx, empty, types.StringType, []string(nil))
	if d.HasError() || !l.Equal(empty) {
		t.Errorf("List(empty prior, none) = %s, want the empty list kept", l)
	}
	l, _ = List(ctx, types.ListNull(types.StringType), types.StringType, []string(nil))
	if !l.IsNull() {
		t.Errorf("List(null, none) = %s, want null", l)
	}
	l, _ = IntList(ctx, types.ListNull(types.Int64Type), []uint32{1, 2})
	back, d := IntListProto[uint32](ctx, l)
	if d.HasError() || len(back) != 2 || back[1] != 2 {
		t.Errorf("IntList round trip = %v, %v", back, d)
	}
	m, _ := StringMap(ctx, types.MapNull(types.StringType), map[string]string{"rack": "r1"})
	mm, d := StringMapProto(ctx, m)
	if d.HasError() || mm["rack"] != "r1" {
		t.Errorf("StringMap round trip = %v, %v", mm, d)
	}
	if got, _ := StringMapProto(ctx, types.MapUnknown(types.StringType)); got != nil {
		t.Errorf("StringMapProto(unknown) = %v, want nil", got)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	if _, d := DurationProto(types.StringValue("an hour"), "lease_duration"); !d.HasError() {
		t.Error(`DurationProto("an hour") did not fail`)
	}
	if _, d := TimestampProto(types.StringValue("yesterday"), "t"); !d.HasError() {
		t.Error(`TimestampProto("yesterday") did not fail`)
	}
	if v, d := DurationProto(types.StringValue("90s"), "x"); d.HasError() || v.AsDuration() != 90*time.Second {
		t.Errorf(`DurationProto("90s") = %v, %v`, v, d)
	}
}
