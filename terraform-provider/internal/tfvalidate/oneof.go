package tfvalidate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
)

// OneofValidator is the validator of one member of a protobuf oneof: the
// attributes members, siblings in one object, of which at most one (with
// required, exactly one) may be set. Each member carries it, but only one
// reports a problem, so that it is reported once.
type OneofValidator struct {
	members  []string
	self     string
	required bool
}

// OneofMember is the validator of the attribute self, one of the attributes
// members of a protobuf oneof (in declaration order): at most one of them
// may be set, and with required, one must be. It serves attributes of any
// type.
func OneofMember(members []string, self string, required bool) OneofValidator {
	return OneofValidator{members: members, self: self, required: required}
}

func (v OneofValidator) Description(context.Context) string {
	if v.required {
		return "exactly one of " + orList(v.members) + " is set"
	}
	return "at most one of " + orList(v.members) + " is set"
}

func (v OneofValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

// orList is "a", "a or b", "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// validate checks the members around the attribute at p.
func (v OneofValidator) validate(ctx context.Context, config tfsdk.Config, p path.Path) diag.Diagnostics {
	var diags diag.Diagnostics
	parent := p.ParentPath()
	var set []string
	for _, name := range v.members {
		var val attr.Value
		diags.Append(config.GetAttribute(ctx, parent.AtName(name), &val)...)
		if diags.HasError() {
			return diags
		}
		if val.IsUnknown() {
			return nil // decided at apply
		}
		if !val.IsNull() {
			set = append(set, name)
		}
	}
	switch {
	case len(set) > 1 && set[0] == v.self:
		diags.AddAttributeError(p, "Conflicting attributes",
			fmt.Sprintf("%s are all set; set only one of %s.", strings.Join(set, " and "), orList(v.members)))
	case len(set) == 0 && v.required && slices.Index(v.members, v.self) == 0:
		where := "the resource"
		if len(parent.Steps()) > 0 {
			where = parent.String()
		}
		diags.AddAttributeError(p, "Missing attribute",
			fmt.Sprintf("Set one of %s in %s.", orList(v.members), where))
	}
	return diags
}

func (v OneofValidator) ValidateObject(ctx context.Context, req validator.ObjectRequest, resp *validator.ObjectResponse) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}

func (v OneofValidator) ValidateString(ctx context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}

func (v OneofValidator) ValidateInt64(ctx context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}

func (v OneofValidator) ValidateFloat64(ctx context.Context, req validator.Float64Request, resp *validator.Float64Response) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}

func (v OneofValidator) ValidateBool(ctx context.Context, req validator.BoolRequest, resp *validator.BoolResponse) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}

func (v OneofValidator) ValidateList(ctx context.Context, req validator.ListRequest, resp *validator.ListResponse) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}

func (v OneofValidator) ValidateMap(ctx context.Context, req validator.MapRequest, resp *validator.MapResponse) {
	resp.Diagnostics.Append(v.validate(ctx, req.Config, req.Path)...)
}
