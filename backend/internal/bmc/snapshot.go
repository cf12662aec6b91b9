package bmc

import (
	"context"
	"fmt"

	"github.com/carbide-dev/carbide/ent"
	entbmc "github.com/carbide-dev/carbide/ent/bmc"
	"github.com/carbide-dev/carbide/ent/bmcoperation"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	"github.com/google/uuid"
)

// EachBMC calls fn for every BMC, in machine id order, reading batch at a
// time: the snapshot Watch sends.
func EachBMC(ctx context.Context, client *ent.Client, batch int, fn func(*bmcv1.BMC) error) error {
	d, err := loadDefaults(ctx, client.SegmentCredentials)
	if err != nil {
		return err
	}
	after := uuid.Nil
	for {
		bs, err := client.BMC.Query().Where(machineIDGT(after)).
			Order(ent.Asc(entbmc.FieldMachineID)).Limit(batch).All(ctx)
		if err != nil {
			return fmt.Errorf("read BMCs: %w", err)
		}
		for _, b := range bs {
			if err := fn(d.show(b)); err != nil {
				return err
			}
		}
		if len(bs) < batch {
			return nil
		}
		after = bs[len(bs)-1].MachineID
	}
}

// EachUnfinishedOperation calls fn for every operation that is pending or
// running, in id order, reading batch at a time: the snapshot Watch sends
// (finished operations are history, which ListOperations serves).
func EachUnfinishedOperation(ctx context.Context, client *ent.Client, batch int, fn func(*bmcv1.Operation) error) error {
	after := uuid.Nil
	for {
		ops, err := client.BMCOperation.Query().
			Where(bmcoperation.IDGT(after), bmcoperation.StateIn(bmcoperation.StatePending, bmcoperation.StateRunning)).
			Order(ent.Asc(bmcoperation.FieldID)).Limit(batch).All(ctx)
		if err != nil {
			return fmt.Errorf("read BMC operations: %w", err)
		}
		for _, op := range ops {
			if err := fn(operationToProto(op)); err != nil {
				return err
			}
		}
		if len(ops) < batch {
			return nil
		}
		after = ops[len(ops)-1].ID
	}
}
