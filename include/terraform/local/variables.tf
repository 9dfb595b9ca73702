# Shared input contract (docs/design.md): every fleet module declares exactly these; the DAG sets them as TF_VAR_*.

variable "octopus_server_url" {
  type        = string
  description = "Octopus Server URL the tentacles register with, e.g. http://127.0.0.1:8065 (a path prefix is allowed)."

  validation {
    condition     = can(regex("^https?://[^/?#\\s]+(/[^?#\\s]*)?$", var.octopus_server_url))
    error_message = "octopus_server_url must be an http:// or https:// URL without query or fragment, e.g. http://127.0.0.1:8065."
  }
}

variable "octopus_space_name" {
  type        = string
  description = "Name of the space the tentacles register in (register-worker --space); the DAG shares them to the other spaces."

  validation {
    condition     = trimspace(var.octopus_space_name) != ""
    error_message = "octopus_space_name must not be empty."
  }
}

variable "worker_pool_name" {
  type        = string
  description = "Worker pool name, slug or Id the tentacles join in the initial space (register-worker --workerpool)."

  validation {
    condition     = trimspace(var.worker_pool_name) != ""
    error_message = "worker_pool_name must not be empty."
  }
}

variable "instance_count" {
  type        = number
  description = "Number of tentacle instances (simulated VMs); 0 removes them all."

  validation {
    condition     = var.instance_count >= 0 && floor(var.instance_count) == var.instance_count
    error_message = "instance_count must be a whole number >= 0."
  }
}

variable "machine_policy_name" {
  type        = string
  default     = "Default Machine Policy"
  description = "Machine policy the tentacles register with (register-worker --policy)."

  validation {
    condition     = trimspace(var.machine_policy_name) != ""
    error_message = "machine_policy_name must not be empty (the default is \"Default Machine Policy\")."
  }
}

variable "name_prefix" {
  type        = string
  description = "Worker name prefix: instances are named <name_prefix>-1, <name_prefix>-2, ..."

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", var.name_prefix))
    error_message = "name_prefix must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit (it names worker records and runtime directories)."
  }
}

variable "remove_instances" {
  type        = list(string)
  default     = []
  description = "Worker names (the name of an `instances` entry) of the instances to remove, chosen by the package after draining them. Each goes, whatever instance_count says; new instances get new numbers. Names of no instance of this fleet are ignored (already removed)."
}

# Local-only inputs (this cloud's instances are processes on this machine).

variable "python_executable" {
  type        = string
  default     = "python3"
  description = "Python interpreter that can import octopus_emulator (the repository root is added to PYTHONPATH when this module sits in the repository)."

  validation {
    condition     = trimspace(var.python_executable) != ""
    error_message = "python_executable must not be empty."
  }
}

variable "runtime_dir" {
  type        = string
  default     = ""
  description = "Directory holding each instance's disk (<runtime_dir>/<name>: tentacle state, pid, log); empty means ~/.local/state/octopus-local-cloud."
}

variable "server_comms_port" {
  type        = number
  default     = 10943
  description = "The emulator's comms (polling) port the tentacles connect to."

  validation {
    condition     = var.server_comms_port >= 1 && var.server_comms_port <= 65535 && floor(var.server_comms_port) == var.server_comms_port
    error_message = "server_comms_port must be a whole number between 1 and 65535."
  }
}

variable "boot_delay_seconds" {
  type        = number
  default     = 2
  description = "Seconds each new instance 'boots' before its tentacle registers, like a VM starting up."

  validation {
    condition     = var.boot_delay_seconds >= 0 && var.boot_delay_seconds <= 600
    error_message = "boot_delay_seconds must be between 0 and 600."
  }
}
