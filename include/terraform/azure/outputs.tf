# Never a secret: the API key is read by the instances at boot and is not known to Terraform.

output "cloud" {
  description = "The cloud of this fleet."
  value       = "azure"
}

output "instance_count" {
  description = "Number of current instances the scale set keeps (outdated ones still draining come on top: surge_instances)."
  value       = azurerm_linux_virtual_machine_scale_set.workers.instances - var.surge_instances
}

output "outdated_instances" {
  description = "Names of the VMs not running the scale set's latest model (latest_model_applied false): not counted toward instance_count; the package drains them and removes them by name."
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
  description = "Names of the workers the scale set runs now: <name_prefix>-<VMSS instance id>-<first 8 of vmId>, the names they register with."
  value       = [for i in local.instances : i.name]
}

output "instances" {
  description = "The VMs the scale set runs now: name (the worker name it registers with) and id (the VM's vmId, new for every replacement)."
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
  description = "Resource id of the scale set."
  value       = azurerm_linux_virtual_machine_scale_set.workers.id
}

output "fleet_name" {
  description = "Name of the scale set."
  value       = azurerm_linux_virtual_machine_scale_set.workers.name
}

output "identity_principal_id" {
  description = "Principal id of the instances' managed identity (reads the API key secret only)."
  value       = azurerm_user_assigned_identity.worker.principal_id
}
