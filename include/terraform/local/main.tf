# The embedded "local" cloud: every instance is a simulated polling tentacle (a detached
# `python -m octopus_emulator register-worker --run` process) standing in for a VM. Built-in resources only.
#
# The API key never passes through Terraform: the tentacles read OCTOPUS_API_KEY from the environment that
# local-exec inherits from Terraform itself, so it is in no variable, no state and no command line.

locals {
  # Not under path.root: include/terraform-fleet.sh runs Terraform in a throwaway copy of the module.
  runtime_dir = abspath(pathexpand(var.runtime_dir != "" ? var.runtime_dir : "~/.local/state/octopus-local-cloud"))

  # Which instances exist: this cloud's inventory is its instance disks, <runtime_dir>/<name_prefix>-<n> (each holds
  # tentacle.pid from its first start until it is removed), read at plan time the way a cloud module reads its
  # group. The configuration cannot read Terraform's own state, and without this a removed number would come back.
  prefix_re = replace(var.name_prefix, ".", "\\.")
  live = [for f in fileset(local.runtime_dir, "${var.name_prefix}-*/tentacle.pid") :
  tonumber(regex("^${local.prefix_re}-([1-9][0-9]{0,8})/", f)[0]) if can(regex("^${local.prefix_re}-[1-9][0-9]{0,8}/", f))]
  # remove_instances entries that name an instance of this fleet (others are not ours, or already gone: ignored).
  removed_numbers = [for n in var.remove_instances :
  tonumber(regex("^${local.prefix_re}-([1-9][0-9]{0,8})$", n)[0]) if can(regex("^${local.prefix_re}-[1-9][0-9]{0,8}$", n))]

  # What an instance is built from (its "VM image + user data"). Each instance keeps the fingerprint of the
  # configuration it was started with on its disk (<home>/build.fingerprint, written by tentacle-ctl.sh start).
  # An instance built from an older configuration is *outdated*: it is never replaced in place (that would stop
  # it under a running step and empty the pools). It stays, does not count toward instance_count, and the apply
  # starts instance_count current instances beside it (surge); the package shares them, drains the outdated
  # ones and removes them by name (remove_instances). An instance started by an earlier version of this module
  # has no fingerprint: it is taken as current (it was built by the apply that last ran; nothing says otherwise).
  build = substr(sha256(jsonencode({
    server_url  = var.octopus_server_url
    space       = var.octopus_space_name
    worker_pool = var.worker_pool_name
    policy      = var.machine_policy_name
    comms_port  = var.server_comms_port
  })), 0, 16)
  built_from = { for n in local.live : tostring(n) => try(trimspace(file(
  "${local.runtime_dir}/${var.name_prefix}-${n}/build.fingerprint")), "") }
  outdated = [for n in local.live : n
  if !contains(local.removed_numbers, n) && !contains(["", local.build], local.built_from[tostring(n)])]

  # The package picks who leaves: every instance named in remove_instances goes. Outdated instances stay until
  # named. The current ones stay, in number order (sort() orders strings, hence the padding); only when
  # instance_count is lower still (no names given) do the highest-numbered current ones go, as before
  # remove_instances existed.
  kept = [for p in sort([for n in local.live : format("%09d", n)
  if !contains(local.removed_numbers, n) && !contains(local.outdated, n)]) : tonumber(p)]
  keep = slice(local.kept, 0, min(length(local.kept), var.instance_count))
  # New instances are numbered above every instance there is and every one being removed, so a removed name never
  # returns in the same apply (the same number would be the same instance to Terraform) and the plan does not
  # depend on whether a removed disk is already gone when the apply re-reads the inventory.
  first_new = max(0, concat(local.live, local.removed_numbers)...) + 1
  numbers   = concat(local.outdated, local.keep, [for i in range(var.instance_count - length(local.keep)) : local.first_new + i])
  roster    = { for n in local.numbers : tostring(n) => "${var.name_prefix}-${n}" }

  # When this module sits in the repository, let python_executable import octopus_emulator from it.
  repo_root           = abspath("${path.module}/../../..")
  emulator_pythonpath = fileexists("${local.repo_root}/octopus_emulator/__init__.py") ? local.repo_root : ""

  ctl = "${path.module}/scripts/tentacle-ctl.sh"
}

# The fleet's identity; fleet_id stays the same while the fleet exists.
resource "terraform_data" "fleet" {
  triggers_replace = [var.name_prefix, local.runtime_dir]
}

# One per instance, keyed by its number (the name is <name_prefix>-<number>); moved.tf carries the count-indexed
# instances of earlier versions over without restarting them.
resource "terraform_data" "tentacle" {
  for_each = local.roster

  # What the "VM image + user data" was made of when the instance was built. Never acted on (ignore_changes
  # below): a change makes the running instance *outdated* (local.outdated), it is not replaced in place.
  triggers_replace = {
    server_url  = var.octopus_server_url
    space       = var.octopus_space_name
    worker_pool = var.worker_pool_name
    policy      = var.machine_policy_name
    comms_port  = var.server_comms_port
  }

  # Destroy-time provisioners may only read self, so everything "stop" needs is kept here.
  input = {
    name = each.value
    home = "${local.runtime_dir}/${each.value}"
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
      TENTACLE_BUILD       = local.build
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

  lifecycle {
    # A rebuild without a gap: Terraform never replaces a running instance because its build inputs changed.
    ignore_changes = [triggers_replace]
  }
}

locals {
  # The instances in number order (for_each orders its keys as strings: "10" before "2").
  ordered = [for p in sort([for k in keys(terraform_data.tentacle) : format("%09d", tonumber(k))]) :
  terraform_data.tentacle[tostring(tonumber(p))]]
}

