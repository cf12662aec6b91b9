package provider

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/carbide-dev/carbide/sdk/carbide"
)

// clientFrom returns the client the provider's Configure made. Data is nil
// while Terraform validates a configuration before the provider is
// configured: then it returns nil and no error.
func clientFrom(data any, diags *diag.Diagnostics) *carbide.Client {
	if data == nil {
		return nil
	}
	c, ok := data.(*carbide.Client)
	if !ok {
		diags.AddError("Unexpected provider data",
			fmt.Sprintf("Expected a *carbide.Client, got %T. This is a bug in the provider: please report it.", data))
		return nil
	}
	return c
}

// isNotFound reports whether err is the API's not_found.
func isNotFound(err error) bool { return carbide.IsNotFound(err) }

// apiError adds err, returned by the API while doing what, as an error
// diagnostic: the API's code and message, which name the offending field
// for invalid input, and a hint for the errors a configuration can cause.
func apiError(diags *diag.Diagnostics, what string, err error) {
	detail := err.Error()
	if e, ok := carbide.AsError(err); ok {
		detail = e.Error()
		if len(e.Violations) > 1 {
			detail += "\n"
			for _, v := range e.Violations {
				detail += "\n  - " + v.String()
			}
		}
		switch e.Code {
		case connect.CodeUnavailable, connect.CodeUnknown:
			detail += "\n\nCheck the provider's endpoint (CARBIDE_ENDPOINT) and that the Carbide API runs there."
		case connect.CodeUnauthenticated:
			detail += "\n\nCheck the provider's credentials: client_cert and client_key, or token / token_command."
		case connect.CodePermissionDenied:
			detail += "\n\nThe provider's credentials lack a role that may do this; an operator or admin role may."
		}
	}
	diags.AddError("Cannot "+what, detail)
}

// objectAsOptions read a nested object into a model struct: unknown and
// null nested values stay as they are.
var objectAsOptions = basetypes.ObjectAsOptions{UnhandledNullAsEmpty: true, UnhandledUnknownAsEmpty: true}
