package carbide

import (
	"context"
	"iter"

	auditv1 "github.com/carbide-dev/carbide/gen/carbide/audit/v1"
	bmcv1 "github.com/carbide-dev/carbide/gen/carbide/bmc/v1"
	instancev1 "github.com/carbide-dev/carbide/gen/carbide/instance/v1"
	machinev1 "github.com/carbide-dev/carbide/gen/carbide/machine/v1"
)

// The iterators below walk the other list RPCs the way AllMachines does:
// page after page, with req's filters and page size, stopping at the first
// error, which they yield. They never change req.

// AllMachineTransitions yields a machine's state history, oldest first.
func (c *Client) AllMachineTransitions(ctx context.Context, req *machinev1.ListMachineTransitionsRequest) iter.Seq2[*machinev1.StateTransition, error] {
	return paginate(ctx, req, c.Machines.ListMachineTransitions,
		func(r *machinev1.ListMachineTransitionsRequest, token string) { r.PageToken = token },
		func(r *machinev1.ListMachineTransitionsResponse) ([]*machinev1.StateTransition, string) {
			return r.GetTransitions(), r.GetNextPageToken()
		})
}

// AllIdentityConflicts yields the inventory reports held for an operator,
// oldest first.
func (c *Client) AllIdentityConflicts(ctx context.Context, req *machinev1.ListIdentityConflictsRequest) iter.Seq2[*machinev1.IdentityConflict, error] {
	return paginate(ctx, req, c.Machines.ListIdentityConflicts,
		func(r *machinev1.ListIdentityConflictsRequest, token string) { r.PageToken = token },
		func(r *machinev1.ListIdentityConflictsResponse) ([]*machinev1.IdentityConflict, string) {
			return r.GetConflicts(), r.GetNextPageToken()
		})
}

// AllImages yields every image that matches req's filters, by name then
// version.
func (c *Client) AllImages(ctx context.Context, req *instancev1.ListImagesRequest) iter.Seq2[*instancev1.Image, error] {
	return paginate(ctx, req, c.Images.ListImages,
		func(r *instancev1.ListImagesRequest, token string) { r.PageToken = token },
		func(r *instancev1.ListImagesResponse) ([]*instancev1.Image, string) {
			return r.GetImages(), r.GetNextPageToken()
		})
}

// AllInstances yields every instance that matches req's filters, newest
// first.
func (c *Client) AllInstances(ctx context.Context, req *instancev1.ListInstancesRequest) iter.Seq2[*instancev1.Instance, error] {
	return paginate(ctx, req, c.Instances.ListInstances,
		func(r *instancev1.ListInstancesRequest, token string) { r.PageToken = token },
		func(r *instancev1.ListInstancesResponse) ([]*instancev1.Instance, string) {
			return r.GetInstances(), r.GetNextPageToken()
		})
}

// AllAuditRecords yields every audit record that matches req's filters,
// newest first.
func (c *Client) AllAuditRecords(ctx context.Context, req *auditv1.ListAuditRecordsRequest) iter.Seq2[*auditv1.AuditRecord, error] {
	return paginate(ctx, req, c.Audit.ListAuditRecords,
		func(r *auditv1.ListAuditRecordsRequest, token string) { r.PageToken = token },
		func(r *auditv1.ListAuditRecordsResponse) ([]*auditv1.AuditRecord, string) {
			return r.GetRecords(), r.GetNextPageToken()
		})
}

// AllBMCs yields every machine BMC that matches req's filters.
func (c *Client) AllBMCs(ctx context.Context, req *bmcv1.ListBMCsRequest) iter.Seq2[*bmcv1.BMC, error] {
	return paginate(ctx, req, c.BMC.ListBMCs,
		func(r *bmcv1.ListBMCsRequest, token string) { r.PageToken = token },
		func(r *bmcv1.ListBMCsResponse) ([]*bmcv1.BMC, string) {
			return r.GetBmcs(), r.GetNextPageToken()
		})
}

// AllBMCOperations yields every BMC operation that matches req's filters.
func (c *Client) AllBMCOperations(ctx context.Context, req *bmcv1.ListOperationsRequest) iter.Seq2[*bmcv1.Operation, error] {
	return paginate(ctx, req, c.BMC.ListOperations,
		func(r *bmcv1.ListOperationsRequest, token string) { r.PageToken = token },
		func(r *bmcv1.ListOperationsResponse) ([]*bmcv1.Operation, string) {
			return r.GetOperations(), r.GetNextPageToken()
		})
}
