# A disk image the discovery agent writes onto the machine's disk.
resource "carbide_os_image" "debian" {
  name         = "debian"
  version      = "12"
  description  = "Debian 12 (bookworm), cloud-init"
  architecture = "amd64"
  firmware     = ["uefi", "bios"]

  disk = {
    file = {
      url        = "http://10.1.0.5:8080/images/debian-12-genericcloud-amd64.qcow2"
      sha256     = "2c2ac7a1bd6d8cf8d4e5c6b3a0e7f5e9d1b2c3a4f5e6d7c8b9a0f1e2d3c4b5a6"
      size_bytes = 343932928
    }
    format = "qcow2"
  }
}

# An image booted over the network every time: a kernel and an initrd.
resource "carbide_os_image" "rescue" {
  name         = "rescue"
  version      = "2026.11.1"
  architecture = "amd64"
  firmware     = ["bios", "uefi"]

  netboot = {
    kernel  = { url = "http://10.1.0.5:8080/rescue/vmlinuz", sha256 = "4f0a1e8d2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6" }
    initrd  = { url = "http://10.1.0.5:8080/rescue/initrd.img", sha256 = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d" }
    cmdline = "console=ttyS0,115200"
  }
}
