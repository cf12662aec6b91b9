package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/carbide-dev/carbide/sdk/carbide"
)

// Address is the provider's registry address.
const Address = "registry.terraform.io/carbide-dev/carbide"

var _ provider.Provider = (*carbideProvider)(nil)

// carbideProvider is the Carbide provider; version is its release.
type carbideProvider struct {
	version string
}

// New returns a function that makes the provider, as providerserver wants.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &carbideProvider{version: version} }
}

// providerModel is the provider block.
type providerModel struct {
	Endpoint     types.String `tfsdk:"endpoint"`
	CACert       types.String `tfsdk:"ca_cert"`
	ClientCert   types.String `tfsdk:"client_cert"`
	ClientKey    types.String `tfsdk:"client_key"`
	Token        types.String `tfsdk:"token"`
	TokenCommand types.String `tfsdk:"token_command"`
	Protocol     types.String `tfsdk:"protocol"`
}

func (p *carbideProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "carbide"
	resp.Version = p.version
}

func (p *carbideProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The Carbide provider manages bare-metal machines, their instances, network segments and OS images " +
			"through the Carbide API. Every attribute is optional and falls back to a `CARBIDE_*` environment variable; " +
			"an attribute set in the configuration wins over the environment. Authenticate with a client certificate " +
			"(mutual TLS) or with a bearer token, given as is or printed by a command.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "URL of the Carbide API, such as `https://carbide.example:1079` " +
					"(`http://` only for a server started with `--insecure-plaintext`). Environment: `CARBIDE_ENDPOINT`.",
				Optional: true,
			},
			"ca_cert": schema.StringAttribute{
				MarkdownDescription: "Path of the PEM CA bundle that signs the API's server certificate; the system roots when unset. " +
					"Environment: `CARBIDE_CA_CERT`.",
				Optional: true,
			},
			"client_cert": schema.StringAttribute{
				MarkdownDescription: "Path of the PEM client certificate for mutual TLS, given with `client_key`. " +
					"Environment: `CARBIDE_CLIENT_CERT`.",
				Optional: true,
			},
			"client_key": schema.StringAttribute{
				MarkdownDescription: "Path of the PEM private key of `client_cert`. Environment: `CARBIDE_CLIENT_KEY`.",
				Optional:            true,
			},
			"token": schema.StringAttribute{
				MarkdownDescription: "Bearer token (a JWT) sent with every call; never logged. Use it or `token_command`, " +
					"not both. Environment: `CARBIDE_TOKEN`.",
				Optional:  true,
				Sensitive: true,
			},
			"token_command": schema.StringAttribute{
				MarkdownDescription: "Command run with `sh -c` whose trimmed output is the bearer token, such as " +
					"`vault read -field=token secret/carbide`; run again when the token is about to expire. " +
					"Environment: `CARBIDE_TOKEN_COMMAND`.",
				Optional: true,
			},
			"protocol": schema.StringAttribute{
				MarkdownDescription: "Wire protocol: `connect` (the default), `grpc` or `grpc-web`. Environment: `CARBIDE_PROTOCOL`.",
				Optional:            true,
				Validators:          []validator.String{stringvalidator.OneOf("connect", "grpc", "grpc-web")},
			},
		},
	}
}

func (p *carbideProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// The configuration's settings, which win over the environment.
	var set carbide.Config
	for _, a := range []struct {
		name  string
		value types.String
		field *string
	}{
		{"endpoint", m.Endpoint, &set.Endpoint},
		{"ca_cert", m.CACert, &set.CACert},
		{"client_cert", m.ClientCert, &set.ClientCert},
		{"client_key", m.ClientKey, &set.ClientKey},
		{"token", m.Token, &set.Token},
		{"token_command", m.TokenCommand, &set.TokenCommand},
		{"protocol", m.Protocol, &set.Protocol},
	} {
		if a.value.IsUnknown() {
			resp.Diagnostics.AddAttributeError(path.Root(a.name), "Unknown provider setting",
				fmt.Sprintf("The provider's %q is not known until apply. Give it a value known at plan time, "+
					"or set it in the environment instead.", a.name))
			continue
		}
		*a.field = a.value.ValueString()
	}
	if resp.Diagnostics.HasError() {
		return
	}
	cfg := carbide.ConfigFromEnv().Merge(set)
	if err := cfg.Validate(); err != nil {
		resp.Diagnostics.AddError("Invalid Carbide provider configuration",
			fmt.Sprintf("%s.\n\nSet the provider's attributes or their CARBIDE_* environment variables "+
				"(CARBIDE_ENDPOINT, CARBIDE_CA_CERT, CARBIDE_CLIENT_CERT, CARBIDE_CLIENT_KEY, CARBIDE_TOKEN, "+
				"CARBIDE_TOKEN_COMMAND, CARBIDE_PROTOCOL).", strings.TrimSuffix(err.Error(), ".")))
		return
	}
	client, err := cfg.NewClient()
	if err != nil {
		resp.Diagnostics.AddError("Cannot create the Carbide client", err.Error())
		return
	}
	resp.ResourceData = client
	resp.DataSourceData = client
}

// Resources lists the provider's resources.
func (p *carbideProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		newMachineResource,
		newInstanceResource,
		newSegmentResource,
		newOSImageResource,
	}
}

// DataSources lists the provider's data sources.
func (p *carbideProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		newMachineDataSource,
		newMachinesDataSource,
		newSegmentDataSource,
		newOSImageDataSource,
	}
}
