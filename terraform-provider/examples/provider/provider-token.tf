# A bearer token from the identity provider, printed by a command that
# is run again when the token is about to expire.
provider "carbide" {
  endpoint      = "https://carbide.example:1079"
  ca_cert       = "/etc/carbide/ca.crt"
  token_command = "vault read -field=token secret/carbide/terraform"
}
