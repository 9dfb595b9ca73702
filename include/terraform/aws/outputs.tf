# Never a secret: the API key is read by the instances at boot and is not known to Terraform.

output "cloud" {
  description = "The cloud of this fleet."
  value       = "aws"
}

output "instance_count" {
  description = "Number of current worker instances the autoscaling group keeps (outdated ones still draining come on top: surge_instances)."
  value       = aws_autoscaling_group.workers.desired_capacity - var.surge_instances
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
  description = "Names of the workers the group runs now: <name_prefix>-<EC2 instance id>, the names they register with."
  value       = [for i in local.instances : i.name]
}

output "instances" {
  description = "The instances the group runs now: name (the worker name it registers with) and id (the EC2 instance id, new for every replacement)."
  value       = local.instances
}

output "outdated_instances" {
  description = "Names of the running instances not launched from the current build (launch template content, tag octopus:build): not counted toward instance_count; the package drains them and removes them by name."
  value       = local.outdated_instances
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
  description = "ARN of the autoscaling group."
  value       = aws_autoscaling_group.workers.arn
}

output "fleet_name" {
  description = "Name of the autoscaling group."
  value       = aws_autoscaling_group.workers.name
}

output "launch_template_id" {
  description = "Launch template of the workers."
  value       = aws_launch_template.worker.id
}

output "instance_role_arn" {
  description = "IAM role of the instances (reads the API key secret only)."
  value       = aws_iam_role.worker.arn
}
