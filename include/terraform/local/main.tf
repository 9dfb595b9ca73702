# The embedded "local" cloud: every instance is a simulated polling tentacle (a detached
# `python -m octopus_emulator register-worker --run` process) standing in for a VM. Built-in resources only.
#
# The API key never passes through Terraform: the tentacles read OCTOPUS_API_KEY from the environment that
# local-exec inherits from Terraform itself, so it is in no variable, no state and no command line.

locals {
  # Not under path.root: include/terraform-fleet.sh runs Terraform in a throwaway copy of the module.
  runtime_dir = abspath(pathexpand(var.runtime_dir != "" ? var.runtime_dir : "~/.local/state/octopus-local-cloud"))
  names       = [for i in range(var.instance_count) : "${var.name_prefix}-${i + 1}"]

  # When this module sits in the repository, let python_executable import octopus_emulator from it.
  repo_root           = abspath("${path.module}/../../..")
  emulator_pythonpath = fileexists("${local.repo_root}/octopus_emulator/__init__.py") ? local.repo_root : ""

  ctl = "${path.module}/scripts/tentacle-ctl.sh"
}

# The fleet's identity; fleet_id stays the same while the fleet exists.
resource "terraform_data" "fleet" {
  triggers_replace = [var.name_prefix, local.runtime_dir]
}

resource "terraform_data" "tentacle" {
  count = var.instance_count

  # What the "VM image + user data" is made of: changing any of it rebuilds the instance.
  triggers_replace = {
    server_url  = var.octopus_server_url
    space       = var.octopus_space_name
    worker_pool = var.worker_pool_name
    policy      = var.machine_policy_name
    comms_port  = var.server_comms_port
  }

  # Destroy-time provisioners may only read self, so everything "stop" needs is kept here.
  input = {
    name = local.names[count.index]
    home = "${local.runtime_dir}/${local.names[count.index]}"
  }

  provisioner "local-exec" {
    interpreter = ["bash", local.ctl]
    command     = "start"
    environment = {
      TENTACLE_NAME        = self.input.name
      TENTACLE_HOME        = self.input.home
      TENTACLE_PYTHON      = var.python_executable
      TENTACLE_PYTHONPATH  = local.emulator_pythonpath
      TENTACLE_SERVER      = var.octopus_server_url
      TENTACLE_SPACE       = var.octopus_space_name
      TENTACLE_WORKER_POOL = var.worker_pool_name
      TENTACLE_POLICY      = var.machine_policy_name
      TENTACLE_COMMS_PORT  = tostring(var.server_comms_port)
      TENTACLE_BOOT_DELAY  = tostring(var.boot_delay_seconds)
    }
  }

  provisioner "local-exec" {
    when        = destroy
    interpreter = ["bash", "${path.module}/scripts/tentacle-ctl.sh"] # locals are not allowed at destroy time
    command     = "stop"
    environment = {
      TENTACLE_NAME = self.input.name
      TENTACLE_HOME = self.input.home
    }
  }
}
