# Never a secret: the API key is read by the instances at boot and is not known to Terraform.

output "cloud" {
  description = "The cloud of this fleet."
  value       = "gcp"
}

output "instance_count" {
  description = "Number of current instances the managed instance group keeps (outdated ones still draining come on top: surge_instances)."
  value       = google_compute_region_instance_group_manager.workers.target_size - var.surge_instances
}

output "outdated_instances" {
  description = "Names of the instances not created from the current instance template's build (label octopus-build): not counted toward instance_count; the package drains them and removes them by name."
  value       = local.outdated_instances
}

output "name_prefix" {
  description = "Worker name prefix."
  value       = var.name_prefix
}

output "worker_pool_name" {
  description = "Worker pool the workers join in the initial space."
  value       = var.worker_pool_name
}

output "octopus_space_name" {
  description = "The initial space the workers register in."
  value       = var.octopus_space_name
}

output "worker_names" {
  description = "Names of the workers the group runs now: the instance names (<name_prefix>-<random>), the names they register with."
  value       = [for i in local.instances : i.name]
}

output "instances" {
  description = "The instances the group runs now: name (the worker name it registers with) and id (the numeric instance id, new for every replacement)."
  value       = local.instances
}

output "server_comms_addresses" {
  description = "Polling addresses of the workers: the first registers, every further one is an HA node they also poll."
  value       = local.server_comms_addresses
}

output "worker_name_prefix" {
  description = "Every worker name of this fleet starts with this."
  value       = "${var.name_prefix}-"
}

output "fleet_id" {
  description = "Id of the regional managed instance group."
  value       = google_compute_region_instance_group_manager.workers.id
}

output "fleet_name" {
  description = "Name of the regional managed instance group."
  value       = google_compute_region_instance_group_manager.workers.name
}

output "service_account_email" {
  description = "Service account of the instances (reads the API key secret only)."
  value       = google_service_account.worker.email
}
