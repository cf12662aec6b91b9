// Package provider is Carbide's Terraform provider, built on
// terraform-plugin-framework: the provider configuration (endpoint and
// credentials, also from CARBIDE_* environment variables), and the
// resources and data sources that manage machines, instances, segments and
// OS images through the Carbide API. Their schemas and model conversions
// come from the code generated from the API's protobuf definitions
// (internal/generated); the code here is the CRUD glue and the waiters.
package provider
