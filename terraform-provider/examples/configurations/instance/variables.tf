variable "endpoint" {
  type        = string
  description = "URL of the Carbide API, such as https://carbide.example:1079; CARBIDE_ENDPOINT when null."
  default     = null
}

variable "ca_cert" {
  type        = string
  description = "Path of the CA bundle that signs the API's certificate; CARBIDE_CA_CERT when null."
  default     = null
}

variable "client_cert" {
  type        = string
  description = "Path of the client certificate; CARBIDE_CLIENT_CERT when null."
  default     = null
}

variable "client_key" {
  type        = string
  description = "Path of the client certificate's private key; CARBIDE_CLIENT_KEY when null."
  default     = null
}

variable "hostname" {
  type        = string
  description = "The instance's host name."
  default     = "tenant-vm"
}

variable "image_id" {
  type        = string
  description = "ID of the OS image to install, such as a carbide_os_image's id."
}

variable "machine_labels" {
  type        = map(string)
  description = "Labels the machine must carry; any labels when null."
  default     = null
}

variable "min_cpus" {
  type        = number
  description = "At least this many logical CPUs; any when null."
  default     = null
}

variable "min_memory_bytes" {
  type        = number
  description = "At least this much memory; any when null."
  default     = null
}

variable "min_disk_bytes" {
  type        = number
  description = "A disk at least this big; any when null."
  default     = null
}

variable "segment_id" {
  type        = string
  description = "ID of the network segment the machine must have an interface on; any when null."
  default     = null
}

variable "ssh_authorized_keys" {
  type        = list(string)
  description = "SSH public keys for the image's default user, such as the content of ~/.ssh/id_ed25519.pub."
}

variable "user_data" {
  type        = string
  description = "cloud-init user data: a #cloud-config document or a script."
  default     = null
  sensitive   = true
}

variable "create_timeout" {
  type        = string
  description = "How long apply waits for the instance to run."
  default     = "30m"
}

variable "delete_timeout" {
  type        = string
  description = "How long destroy waits for the machine to be wiped and Ready."
  default     = "30m"
}
