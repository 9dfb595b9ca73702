# Shared input contract (include/terraform/contract.json): the DAG sets exactly these as TF_VAR_*.

variable "octopus_server_url" {
  type        = string
  description = "Octopus Server URL the workers register with (register-worker --server), e.g. https://octopus.example.com."

  validation {
    condition     = can(regex("^https?://[^/?#\\s]+(/[^?#\\s]*)?$", var.octopus_server_url))
    error_message = "octopus_server_url must be an http:// or https:// URL without query or fragment, e.g. https://octopus.example.com."
  }
}

variable "octopus_space_name" {
  type        = string
  description = "The initial space the workers register in (register-worker --space); the DAG shares them to the other spaces."

  validation {
    condition     = trimspace(var.octopus_space_name) != ""
    error_message = "octopus_space_name must not be empty."
  }
}

variable "worker_pool_name" {
  type        = string
  description = "Worker pool name, slug or Id the workers join in the initial space (register-worker --workerpool)."

  validation {
    condition     = trimspace(var.worker_pool_name) != ""
    error_message = "worker_pool_name must not be empty."
  }
}

variable "instance_count" {
  type        = number
  description = "Number of worker VMs; 0 keeps the fleet's scaffolding with no VMs."

  validation {
    condition     = var.instance_count >= 0 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number >= 0."
  }
}

variable "machine_policy_name" {
  type        = string
  default     = "Default Machine Policy"
  description = "Machine policy the workers register with (register-worker --policy)."

  validation {
    condition     = trimspace(var.machine_policy_name) != ""
    error_message = "machine_policy_name must not be empty (the default is \"Default Machine Policy\")."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the fleet's cloud resources and of every worker name (<name_prefix>-<instance id>)."

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.name_prefix))
    error_message = "name_prefix must be 1-32 lowercase letters, digits or '-', starting with a letter and not ending with '-' (cloud resource names allow no more)."
  }
}

variable "remove_instances" {
  type        = list(string)
  default     = []
  description = "Worker names (the name of an `instances` entry) of the instances the package removes in this run, after draining them. include/terraform-fleet.sh removes each through the cloud's API (include/remove-instance.sh) before the plan, one less in the group per instance, so the plan never lowers the group's size and the cloud never picks. Names no longer in the group are skipped."
}

variable "surge_instances" {
  type        = number
  default     = 0
  description = "Outdated instances (built from an older configuration, see the outdated_instances output) still in the group: the group holds instance_count current instances plus these while the package shares the new ones, drains the outdated ones and removes them by name. Set by include/terraform-fleet.sh from the outdated_instances output; leave it 0 by hand."

  validation {
    condition     = var.surge_instances >= 0 && floor(var.surge_instances) == var.surge_instances
    error_message = "surge_instances must be a whole number >= 0."
  }
}

# Azure inputs supplied by the operator (*.auto.tfvars or TF_VAR_* on the Airflow worker): no sensible default.

variable "resource_group_name" {
  type        = string
  description = "Existing resource group for the scale set and its identity; its location is the default location."

  validation {
    condition     = trimspace(var.resource_group_name) != ""
    error_message = "resource_group_name must not be empty."
  }
}

variable "subnet_id" {
  type        = string
  description = "Subnet for the instances; it needs outbound HTTPS to the Octopus Server (and its polling port) and to the apt repositories, e.g. through a NAT gateway."

  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.Network/virtualNetworks/[^/]+/subnets/[^/]+$", var.subnet_id))
    error_message = "subnet_id must be a subnet resource id (/subscriptions/.../virtualNetworks/<vnet>/subnets/<subnet>)."
  }
}

variable "key_vault_id" {
  type        = string
  description = "Resource id of the Key Vault (RBAC permission model) holding the workers' Octopus API key."

  validation {
    condition     = can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.KeyVault/vaults/[^/]+$", var.key_vault_id))
    error_message = "key_vault_id must be a Key Vault resource id (/subscriptions/.../providers/Microsoft.KeyVault/vaults/<name>)."
  }
}

variable "api_key_secret_name" {
  type        = string
  description = "Name of the Key Vault secret holding the bare Octopus API key (API-...). Only this secret is readable by the instances."

  validation {
    condition     = can(regex("^[0-9A-Za-z-]{1,127}$", var.api_key_secret_name))
    error_message = "api_key_secret_name must be a Key Vault secret name (1-127 letters, digits and '-')."
  }
}

variable "admin_ssh_public_key" {
  type        = string
  description = "OpenSSH public key for the admin user (password login is disabled; no password is in state)."

  validation {
    condition     = can(regex("^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp[0-9]+) [A-Za-z0-9+/=]+", var.admin_ssh_public_key))
    error_message = "admin_ssh_public_key must be an OpenSSH public key (ssh-rsa / ssh-ed25519 / ecdsa-sha2-...)."
  }
}

# Azure inputs with defaults.

variable "subscription_id" {
  type        = string
  default     = null
  description = "Subscription of the fleet; null uses ARM_SUBSCRIPTION_ID."
}

variable "location" {
  type        = string
  default     = null
  description = "Azure region; null uses the resource group's location."
}

variable "key_vault_dns_suffix" {
  type        = string
  default     = "vault.azure.net"
  description = "Key Vault DNS suffix (vault.azure.net in the public cloud, vault.usgovcloudapi.net in US Gov, ...)."
}

variable "vm_size" {
  type        = string
  default     = "Standard_D2s_v5"
  description = "VM size of the instances."
}

variable "admin_username" {
  type        = string
  default     = "octoadmin"
  description = "Admin user name (SSH key only)."
}

variable "os_disk_size_gb" {
  type        = number
  default     = 30
  description = "OS disk size in GiB."

  validation {
    condition     = var.os_disk_size_gb >= 30
    error_message = "os_disk_size_gb must be at least 30 (the Ubuntu image's size)."
  }
}

variable "os_disk_storage_account_type" {
  type        = string
  default     = "Premium_LRS"
  description = "OS disk type (Standard_LRS, StandardSSD_LRS, Premium_LRS, ...)."
}

variable "encryption_at_host_enabled" {
  type        = bool
  default     = true
  description = "Encrypt temp disks, caches and the OS disk's data flows at the host. Needs the Microsoft.Compute/EncryptionAtHost feature registered on the subscription; set false where it is not."
}

variable "zones" {
  type        = list(string)
  default     = []
  description = "Availability zones to spread the instances over; empty for a regional scale set."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Extra tags for every resource."
}

# Bootstrap (include/configure-tentacle.sh) settings, the same in every cloud module.

variable "server_comms_address" {
  type        = string
  default     = null
  description = "Polling (comms) address the workers register with (register-worker --server-comms-address): a host, host:port or https://host[:port]. Null: polling.<instance>.octopus.app for an Octopus Cloud server URL (*.octopus.app), else the server URL's host."

  validation {
    condition     = var.server_comms_address == null ? true : can(regex("^(https://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$", var.server_comms_address))
    error_message = "server_comms_address must be a host name, host:port or https://host[:port], e.g. polling.my-instance.octopus.app."
  }
}

variable "server_comms_port" {
  type        = number
  default     = null
  description = "The Octopus Server's polling (comms) port, for addresses without one. Null: 443 for an Octopus Cloud server URL (*.octopus.app; Tentacle >= 6.3.417), else 10943."

  validation {
    condition     = var.server_comms_port == null ? true : (var.server_comms_port >= 1 && var.server_comms_port <= 65535 && floor(var.server_comms_port) == var.server_comms_port)
    error_message = "server_comms_port must be null or a whole number between 1 and 65535."
  }
}

variable "server_comms_addresses" {
  type        = list(string)
  default     = []
  description = "High availability: the polling address of every node of the Octopus cluster (host, host:port or https://host[:port]). The workers register through the first (or server_comms_address) and poll every one (poll-server), or tasks queued on the other nodes never reach them. Empty: one node."

  validation {
    condition     = alltrue([for a in var.server_comms_addresses : can(regex("^(https://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$", a))])
    error_message = "server_comms_addresses must list host names, host:port or https://host[:port] values, one per Octopus node."
  }
}

variable "secret_read_timeout_minutes" {
  type        = number
  default     = 10
  description = "How long a booting VM keeps retrying to read the API key secret (identity and IAM grants can take minutes to propagate on a first apply); then the bootstrap fails and the VM reports itself unhealthy."

  validation {
    condition     = var.secret_read_timeout_minutes >= 1 && var.secret_read_timeout_minutes <= 45 && floor(var.secret_read_timeout_minutes) == var.secret_read_timeout_minutes
    error_message = "secret_read_timeout_minutes must be a whole number of minutes between 1 and 45."
  }
}

variable "octopus_apt_key_fingerprints" {
  type        = list(string)
  default     = ["DF4235AA125D66D3938B0377896C79DABCE1F8D1"]
  description = "Accepted fingerprints of the Octopus apt signing key (https://apt.octopus.com/public.key); the bootstrap refuses any other key. Add the new one here when Octopus rotates its key."

  validation {
    condition     = length(var.octopus_apt_key_fingerprints) > 0 && alltrue([for f in var.octopus_apt_key_fingerprints : can(regex("^[0-9A-F]{40}$", f))])
    error_message = "octopus_apt_key_fingerprints must list 40-hex-digit uppercase OpenPGP fingerprints (no spaces)."
  }
}

variable "health_check_port" {
  type        = number
  default     = 8095
  description = "Port of the VM's health endpoint (GET /healthz: 200 while the Tentacle service runs), which the cloud's instance repair probes. It only listens once the worker is registered."

  validation {
    condition     = var.health_check_port >= 1024 && var.health_check_port <= 65535 && floor(var.health_check_port) == var.health_check_port
    error_message = "health_check_port must be a whole number between 1024 and 65535."
  }
}

variable "tentacle_version" {
  type        = string
  default     = ""
  description = "Tentacle apt package version to pin (e.g. 8.3.2700); empty installs the newest from the stable channel."

  validation {
    condition     = can(regex("^([0-9][0-9A-Za-z.+~-]*)?$", var.tentacle_version))
    error_message = "tentacle_version must be empty or a Debian package version such as 8.3.2700."
  }
}

variable "install_docker" {
  type        = bool
  default     = true
  description = "Install Docker after the worker has registered (needed for execution containers and worker_tools_image)."
}

variable "install_powershell" {
  type        = bool
  default     = false
  description = "Install PowerShell from the Microsoft apt repository after the worker has registered."
}

variable "worker_tools_image" {
  type        = string
  default     = ""
  description = "Container image to pre-pull after registration (e.g. octopusdeploy/worker-tools:6.5.0-ubuntu.22.04); empty pulls nothing."

  validation {
    condition     = var.worker_tools_image == "" || can(regex("^[A-Za-z0-9][A-Za-z0-9./:@_-]*$", var.worker_tools_image))
    error_message = "worker_tools_image must be empty or an image reference such as octopusdeploy/worker-tools:6.5.0-ubuntu.22.04."
  }
}

variable "bootstrap_script_path" {
  type        = string
  default     = null
  description = "Path of the configure-tentacle.sh template; null uses ../../configure-tentacle.sh next to this module."
}
