// Package authz decides, for every RPC, which roles may call it. The table
// below is the one place that says so; an RPC missing from it is denied to
// everyone, and a test fails when any RPC the server offers lacks an entry.
package authz

import (
	"github.com/carbide-dev/carbide/backend/internal/principal"
	"github.com/carbide-dev/carbide/gen/carbide/agent/v1/agentv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/audit/v1/auditv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/bmc/v1/bmcv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/boot/v1/bootv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/dhcp/v1/dhcpv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/instance/v1/instancev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/machine/v1/machinev1connect"
	"github.com/carbide-dev/carbide/gen/carbide/network/v1/networkv1connect"
	"github.com/carbide-dev/carbide/gen/carbide/watch/v1/watchv1connect"
)

// Procedures of the standard services the API also serves.
const (
	HealthCheck             = "/grpc.health.v1.Health/Check"
	HealthWatch             = "/grpc.health.v1.Health/Watch"
	ReflectionV1            = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	ReflectionV1Alpha       = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
	admin, operator, viewer = principal.RoleAdmin, principal.RoleOperator, principal.RoleViewer
)

// Rule says who may call one RPC.
type Rule struct {
	// Public RPCs need no credentials at all (health checks, for load
	// balancers).
	Public bool
	// Roles that may call it.
	Roles []principal.Role
}

var (
	users   = []principal.Role{admin, operator, viewer}
	writers = []principal.Role{admin, operator}
	admins  = []principal.Role{admin}

	dhcpAndAdmin = []principal.Role{admin, principal.RoleDHCP}
	bmcDaemons   = []principal.Role{principal.RoleBMC}
)

// Policy maps every procedure to its rule.
var Policy = map[string]Rule{
	HealthCheck:       {Public: true},
	HealthWatch:       {Public: true},
	ReflectionV1:      {Roles: users},
	ReflectionV1Alpha: {Roles: users},

	machinev1connect.MachineServiceCreateMachineProcedure:          {Roles: writers},
	machinev1connect.MachineServiceGetMachineProcedure:             {Roles: users},
	machinev1connect.MachineServiceListMachinesProcedure:           {Roles: users},
	machinev1connect.MachineServiceUpdateMachineProcedure:          {Roles: writers},
	machinev1connect.MachineServiceDeleteMachineProcedure:          {Roles: admins},
	machinev1connect.MachineServiceListMachineTransitionsProcedure: {Roles: users},
	machinev1connect.MachineServiceRetryMachineProcedure:           {Roles: writers},
	// Held reports name hardware ids and inventories; deciding one hands
	// a box's identity to a machine.
	machinev1connect.MachineServiceListIdentityConflictsProcedure:   {Roles: admins},
	machinev1connect.MachineServiceResolveIdentityConflictProcedure: {Roles: admins},

	networkv1connect.SegmentServiceCreateSegmentProcedure: {Roles: admins},
	networkv1connect.SegmentServiceGetSegmentProcedure:    {Roles: users},
	networkv1connect.SegmentServiceListSegmentsProcedure:  {Roles: users},
	networkv1connect.SegmentServiceUpdateSegmentProcedure: {Roles: admins},
	networkv1connect.SegmentServiceDeleteSegmentProcedure: {Roles: admins},

	// The DHCP daemon may lease addresses and nothing else.
	networkv1connect.AddressServiceAllocateAddressProcedure: {Roles: dhcpAndAdmin},
	networkv1connect.AddressServiceReleaseAddressProcedure:  {Roles: dhcpAndAdmin},
	networkv1connect.AddressServiceListLeasesProcedure:      {Roles: []principal.Role{admin, operator, viewer, principal.RoleDHCP}},
	dhcpv1connect.DHCPServiceLeaseProcedure:                 {Roles: dhcpAndAdmin},
	dhcpv1connect.DHCPServiceLeaseBatchProcedure:            {Roles: dhcpAndAdmin},
	dhcpv1connect.DHCPServiceReleaseProcedure:               {Roles: dhcpAndAdmin},
	dhcpv1connect.DHCPServiceDeclineProcedure:               {Roles: dhcpAndAdmin},
	dhcpv1connect.DHCPServiceInformProcedure:                {Roles: []principal.Role{admin, operator, viewer, principal.RoleDHCP}},

	// The DNS daemon follows the change stream.
	watchv1connect.WatchServiceWatchProcedure: {Roles: []principal.Role{admin, operator, viewer, principal.RoleDNS}},

	// An agent reports for its own machine only (see Authorize).
	agentv1connect.AgentServiceReportInventoryProcedure: {Roles: []principal.Role{principal.RoleAgent}},
	agentv1connect.AgentServiceGetInstructionProcedure:  {Roles: []principal.Role{principal.RoleAgent}},
	// and enrols its own machine's BMC, in band.
	agentv1connect.AgentServiceEnrollBMCProcedure: {Roles: []principal.Role{principal.RoleAgent}},
	// and reports on the installs and wipes it runs on its own machine.
	agentv1connect.AgentServiceReportProgressProcedure: {Roles: []principal.Role{principal.RoleAgent}},
	agentv1connect.AgentServiceCompleteStepProcedure:   {Roles: []principal.Role{principal.RoleAgent}},

	// The PXE daemon learns how machines boot, and hands out agent tokens;
	// an admin may read how a machine boots, but the handler starts boots
	// and issues tokens for the pxe role only.
	bootv1connect.BootServiceGetBootConfigProcedure: {Roles: []principal.Role{admin, principal.RolePXE}},
	// It passes on an installed system's phone-home, from the machine's
	// leased address only.
	bootv1connect.BootServicePhoneHomeProcedure: {Roles: []principal.Role{principal.RolePXE}},

	// Images: operators register and retire them, everyone reads them.
	instancev1connect.ImageServiceCreateImageProcedure:    {Roles: writers},
	instancev1connect.ImageServiceGetImageProcedure:       {Roles: users},
	instancev1connect.ImageServiceListImagesProcedure:     {Roles: users},
	instancev1connect.ImageServiceDeprecateImageProcedure: {Roles: writers},
	instancev1connect.ImageServiceDeleteImageProcedure:    {Roles: writers},
	// Instances: operators (and the tools that act for tenants, such as
	// Terraform) allocate and release machines.
	instancev1connect.InstanceServiceCreateInstanceProcedure: {Roles: writers},
	instancev1connect.InstanceServiceGetInstanceProcedure:    {Roles: users},
	instancev1connect.InstanceServiceListInstancesProcedure:  {Roles: users},
	instancev1connect.InstanceServiceDeleteInstanceProcedure: {Roles: writers},

	auditv1connect.AuditServiceListAuditRecordsProcedure: {Roles: admins},

	// BMCs: admins set where a BMC is and its credentials; operators
	// power machines and set how they boot; the BMC daemons claim that
	// work and report on it, and nothing else.
	bmcv1connect.BMCServiceSetBMCProcedure:    {Roles: admins},
	bmcv1connect.BMCServiceGetBMCProcedure:    {Roles: users},
	bmcv1connect.BMCServiceListBMCsProcedure:  {Roles: users},
	bmcv1connect.BMCServiceDeleteBMCProcedure: {Roles: admins},
	// A segment's default BMC credentials: admins set them, as they do
	// a BMC's; users see whether there are some (never the password).
	bmcv1connect.BMCServiceSetSegmentCredentialsProcedure:    {Roles: admins},
	bmcv1connect.BMCServiceGetSegmentCredentialsProcedure:    {Roles: users},
	bmcv1connect.BMCServiceDeleteSegmentCredentialsProcedure: {Roles: admins},
	bmcv1connect.BMCServiceRequestOperationProcedure:         {Roles: writers},
	bmcv1connect.BMCServiceGetOperationProcedure:             {Roles: users},
	bmcv1connect.BMCServiceListOperationsProcedure:           {Roles: users},
	bmcv1connect.BMCServiceCancelOperationProcedure:          {Roles: writers},
	bmcv1connect.BMCServiceClaimProcedure:                    {Roles: bmcDaemons},
	bmcv1connect.BMCServiceRenewProcedure:                    {Roles: bmcDaemons},
	bmcv1connect.BMCServiceReportProcedure:                   {Roles: bmcDaemons},
	bmcv1connect.BMCServiceReleaseProcedure:                  {Roles: bmcDaemons},
}
