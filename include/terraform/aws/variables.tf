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

# AWS inputs supplied by the operator (*.auto.tfvars or TF_VAR_* on the Airflow worker): no sensible default.

variable "api_key_secret_arn" {
  type        = string
  description = "ARN of the Secrets Manager secret or SSM SecureString parameter holding the workers' Octopus API key (the bare API-... value). Only this ARN is readable by the instances."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+|ssm:[a-z0-9-]+:[0-9]{12}:parameter/.+)$", var.api_key_secret_arn))
    error_message = "api_key_secret_arn must be the full ARN of a Secrets Manager secret (arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>) or of an SSM parameter (arn:aws:ssm:<region>:<account>:parameter/<name>)."
  }
}

variable "subnet_ids" {
  type        = list(string)
  description = "Subnets (one VPC, ideally several AZs) for the instances; they need outbound HTTPS to the Octopus Server (and its polling port) and to the apt repositories, e.g. through a NAT gateway."

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must list at least one subnet id (subnet-...)."
  }
}

# AWS inputs with defaults.

variable "aws_region" {
  type        = string
  default     = null
  description = "Region of the fleet; null uses the provider's environment (AWS_REGION / AWS_DEFAULT_REGION / profile)."
}

variable "api_key_kms_key_arn" {
  type        = string
  default     = null
  description = "Customer-managed KMS key that encrypts the secret, if any; the instances may decrypt with it only through Secrets Manager / SSM. Null for the AWS-managed key."
}

variable "security_group_ids" {
  type        = list(string)
  default     = []
  description = "Security groups for the instances; empty creates one with no ingress and all egress (a polling Tentacle listens on nothing)."
}

variable "associate_public_ip_address" {
  type        = bool
  default     = false
  description = "Give each instance a public IPv4 address. Off: polling workers need only outbound access (NAT); a public address would make them reachable from the internet."
}

variable "instance_type" {
  type        = string
  default     = "t3.medium"
  description = "EC2 instance type."
}

variable "ami_id" {
  type        = string
  default     = "resolve:ssm:/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
  description = "AMI id, or resolve:ssm:<parameter> (default: Canonical's current Ubuntu 24.04 LTS amd64 image). The bootstrap needs Ubuntu/Debian with apt, python3 and snap (for the AWS CLI) or the AWS CLI."
}

variable "root_volume_size_gb" {
  type        = number
  default     = 30
  description = "Root volume size in GiB (encrypted gp3)."

  validation {
    condition     = var.root_volume_size_gb >= 8
    error_message = "root_volume_size_gb must be at least 8."
  }
}

variable "root_volume_kms_key_id" {
  type        = string
  default     = null
  description = "KMS key for the root volume; null uses the account's default EBS key."
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
