// Package provider will hold Carbide's Terraform provider, built on
// terraform-plugin-framework. It is not built yet (see
// docs/architecture.md for the plan).
package provider
