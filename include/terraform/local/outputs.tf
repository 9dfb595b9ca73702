# Never a secret here: the API key is not known to Terraform at all.

output "instance_count" {
  description = "Number of tentacle instances."
  value       = var.instance_count
}

output "name_prefix" {
  description = "Worker name prefix."
  value       = var.name_prefix
}

output "worker_pool_name" {
  description = "Worker pool the tentacles join in the initial space."
  value       = var.worker_pool_name
}

output "octopus_space_name" {
  description = "The initial space the tentacles register in."
  value       = var.octopus_space_name
}

output "worker_names" {
  description = "Worker names, in instance number order (<name_prefix>-<n>; a removed number is not reused while a higher one exists)."
  value       = [for t in local.ordered : t.input.name]
}

output "fleet_id" {
  description = "Identifier of this fleet, stable while it exists (not a secret)."
  value       = terraform_data.fleet.id
}

output "instances" {
  description = "The instances this cloud runs: the exact worker name each registers with, and an id that changes when the instance is replaced."
  value       = [for t in local.ordered : { name = t.input.name, id = t.id }]
}

output "outdated_instances" {
  description = "Names of the instances built from an older configuration (server URL, space, pool, machine policy or comms port changed since): still running, not counted toward instance_count; the package drains them and removes them by name (remove_instances)."
  value       = [for p in sort([for n in local.outdated : format("%09d", n)]) : terraform_data.tentacle[tostring(tonumber(p))].input.name]
}

output "build" {
  description = "Fingerprint of the configuration new instances are built from (each instance keeps the one it was built from on its disk)."
  value       = local.build
}
