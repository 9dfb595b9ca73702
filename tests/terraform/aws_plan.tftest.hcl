# Offline plan of the aws module with a mocked provider (terraform test, Terraform >= 1.7).
# Run by test_tf_cli.py from a copy of the module when the aws provider can be installed.

mock_provider "aws" {
  mock_data "aws_subnet" {
    defaults = {
      vpc_id = "vpc-0123456789abcdef0"
    }
  }
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{}"
    }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = {
      arn = "arn:aws:iam::123456789012:instance-profile/octo-w-1"
    }
  }
  mock_resource "aws_autoscaling_group" {
    defaults = {
      arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:11111111-2222-3333-4444-555555555555:autoScalingGroupName/octo-w"
    }
  }
  mock_resource "aws_launch_template" {
    defaults = {
      id = "lt-0123456789abcdef0"
    }
  }
  mock_data "aws_instances" {
    defaults = {
      ids = ["i-0bbb2222222222222", "i-0aaa1111111111111"]
    }
  }
}

variables {
  octopus_server_url = "https://octopus.example.com"
  octopus_space_name = "Platform Team"
  worker_pool_name   = "Shared Linux Pool"
  instance_count     = 3
  name_prefix        = "octo-w"
  api_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:octopus/worker-api-key-AbCdEf"
  subnet_ids         = ["subnet-0abc", "subnet-0def"]
}

run "user_data_is_the_gzipped_rendered_bootstrap_with_the_secret_reference_only" {
  command = plan

  assert {
    condition     = aws_launch_template.worker.user_data == base64gzip(templatefile(local.bootstrap_template, local.bootstrap_vars))
    error_message = "user data is not the gzipped, rendered configure-tentacle.sh"
  }
  assert {
    condition     = local.bootstrap_vars.secret_ref == var.api_key_secret_arn && local.bootstrap_vars.secret_store == "aws-secretsmanager"
    error_message = "a secretsmanager ARN must select the aws-secretsmanager store and carry only the ARN"
  }
  assert {
    condition     = aws_launch_template.worker.network_interfaces[0].associate_public_ip_address == "false"
    error_message = "instances must get no public IP unless asked"
  }
}

run "self_hosted_server_is_polled_on_its_host_at_10943" {
  command = plan

  assert {
    condition     = output.server_comms_addresses == tolist(["https://octopus.example.com:10943"])
    error_message = "a self-hosted server is polled on its own host, port 10943"
  }
}

run "octopus_cloud_is_polled_on_its_polling_host_at_443" {
  command = plan

  variables {
    octopus_server_url = "https://Acme.octopus.app"
  }

  assert {
    condition     = output.server_comms_addresses == tolist(["https://polling.acme.octopus.app:443"])
    error_message = "an Octopus Cloud instance is polled on polling.<instance>.octopus.app:443"
  }
}

run "explicit_address_and_port_win" {
  command = plan

  variables {
    octopus_server_url   = "https://acme.octopus.app"
    server_comms_address = "tentacles.example.net"
    server_comms_port    = 10943
  }

  assert {
    condition     = output.server_comms_addresses == tolist(["https://tentacles.example.net:10943"])
    error_message = "server_comms_address and server_comms_port override the computed defaults"
  }
}

run "ha_cluster_lists_every_node_first_one_registers" {
  command = plan

  variables {
    server_comms_addresses = ["node1.example.com", "https://node2.example.com:10944", "node1.example.com:10943"]
  }

  assert {
    condition     = output.server_comms_addresses == tolist(["https://node1.example.com:10943", "https://node2.example.com:10944"])
    error_message = "every HA node once, each with its port, the first one first"
  }
}

run "rejects_a_comms_address_with_a_path" {
  command = plan

  variables {
    server_comms_address = "https://node1.example.com/polling"
  }

  expect_failures = [var.server_comms_address]
}

run "space_names_with_characters_aws_tags_refuse_are_sanitised" {
  command = plan

  variables {
    octopus_space_name = "R&D"
    worker_pool_name   = "Team (EU) Pool #1"
    tags               = { "cost-center" = "Ops, EU" }
  }

  assert {
    condition     = local.tags["octopus:space"] == "R_D" && local.tags["octopus:workerpool"] == "Team _EU_ Pool _1" && local.tags["cost-center"] == "Ops_ EU"
    error_message = "tag values must keep only letters, digits, spaces and _ . : / = + - @"
  }
  assert {
    condition     = alltrue([for t in aws_autoscaling_group.workers.tag : can(regex("^[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*$", t.value))])
    error_message = "every tag the group propagates must be a valid AWS tag value"
  }
}

run "inventory_names_each_running_instance_as_it_registers" {
  command = apply

  assert {
    condition = output.instances == [
      { name = "octo-w-i-0aaa1111111111111", id = "i-0aaa1111111111111" },
      { name = "octo-w-i-0bbb2222222222222", id = "i-0bbb2222222222222" },
    ]
    error_message = "instances must list every running instance of the group with its worker name"
  }
  assert {
    condition     = output.worker_names == ["octo-w-i-0aaa1111111111111", "octo-w-i-0bbb2222222222222"]
    error_message = "worker_names are the names of instances"
  }
  assert {
    condition     = data.aws_instances.workers.instance_tags["aws:autoscaling:groupName"] == "octo-w" && data.aws_instances.workers.instance_state_names == toset(["running"])
    error_message = "the inventory reads the group's running instances"
  }
}

run "group_is_sized_to_instance_count_and_outputs_follow_the_contract" {
  command = plan

  assert {
    condition     = aws_autoscaling_group.workers.max_size == 3 && aws_autoscaling_group.workers.desired_capacity == 3
    error_message = "the autoscaling group must hold exactly instance_count instances, never more"
  }
  assert {
    condition     = aws_autoscaling_group.workers.min_size == 0
    error_message = "min_size must be 0, or AWS refuses a named termination with capacity decrement below the old count"
  }
  assert {
    condition     = output.instance_count == 3 && output.name_prefix == "octo-w"
    error_message = "contract outputs are wrong"
  }
  assert {
    condition     = length(aws_security_group.worker) == 1
    error_message = "an egress-only security group is created when none is given"
  }
}

run "ssm_parameter_arn_selects_ssm_and_its_read_permission" {
  command = plan

  variables {
    api_key_secret_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/octopus/worker-api-key"
  }

  assert {
    condition     = local.bootstrap_vars.secret_store == "aws-ssm"
    error_message = "an SSM parameter ARN must select the aws-ssm store"
  }
  assert {
    condition     = data.aws_iam_policy_document.read_api_key.statement[0].actions == toset(["ssm:GetParameter"])
    error_message = "the instance policy must allow ssm:GetParameter only"
  }
}

run "rejects_a_secret_name_instead_of_an_arn" {
  command = plan

  variables {
    api_key_secret_arn = "octopus/worker-api-key"
  }

  expect_failures = [var.api_key_secret_arn]
}

run "rejects_a_name_prefix_clouds_cannot_use" {
  command = plan

  variables {
    name_prefix = "Octo_Workers"
  }

  expect_failures = [var.name_prefix]
}

run "rejects_a_negative_instance_count" {
  command = plan

  variables {
    instance_count = -1
  }

  expect_failures = [var.instance_count]
}

run "worker_tools_image_needs_docker" {
  command = plan

  variables {
    install_docker     = false
    worker_tools_image = "octopusdeploy/worker-tools:6.5.0-ubuntu.22.04"
  }

  expect_failures = [aws_launch_template.worker]
}

run "the_group_never_picks_an_instance_to_remove" {
  command = plan

  assert {
    condition     = aws_autoscaling_group.workers.protect_from_scale_in == true
    error_message = "new instances must be protected from scale-in"
  }
  assert {
    condition     = aws_autoscaling_group.workers.suspended_processes == toset(["AZRebalance", "InstanceRefresh"])
    error_message = "AZRebalance and InstanceRefresh must be suspended (and nothing else: ReplaceUnhealthy keeps the no-zombie guarantee)"
  }
  assert {
    condition     = length(aws_autoscaling_group.workers.instance_refresh) == 0
    error_message = "a new launch template version must not roll the fleet"
  }
}

run "a_named_instance_still_running_after_apply_is_reported" {
  command = apply

  variables {
    remove_instances = ["octo-w-i-0aaa1111111111111"]
  }

  expect_failures = [check.named_instances_are_removed]
}

run "instances_already_gone_pass_the_removal_check" {
  command = apply

  variables {
    remove_instances = ["octo-w-i-0ccc3333333333333"]
  }

  assert {
    condition     = length(output.instances) == 2
    error_message = "the inventory is unchanged"
  }
}

# ---- A rebuild without a gap (issue 19): outdated instances stay, the group surges beside them ----

run "the_group_holds_instance_count_plus_the_outdated_instances_still_draining" {
  command = plan

  variables {
    surge_instances = 2
  }

  assert {
    condition     = aws_autoscaling_group.workers.desired_capacity == 5 && aws_autoscaling_group.workers.max_size == 5
    error_message = "the group must hold instance_count current instances beside the outdated ones (surge)"
  }
  assert {
    condition     = output.instance_count == 3
    error_message = "instance_count counts the current instances only"
  }
  assert {
    condition     = [for t in aws_launch_template.worker.tag_specifications : t.tags["octopus:build"] if t.resource_type == "instance"] == [local.build]
    error_message = "the launch template must tag its instances with the build they are launched from"
  }
}

run "instances_not_launched_from_the_current_build_are_outdated" {
  command = apply

  override_data {
    target = data.aws_instances.current
    values = {
      ids = ["i-0aaa1111111111111"]
    }
  }

  assert {
    condition     = output.outdated_instances == ["octo-w-i-0bbb2222222222222"]
    error_message = "an instance without the current build tag is outdated"
  }
  assert {
    condition     = data.aws_instances.current.instance_tags["octopus:build"] == local.build
    error_message = "the current build is read from the instances' octopus:build tag"
  }
}

run "nothing_is_outdated_when_every_instance_runs_the_current_build" {
  command = apply

  assert {
    condition     = output.outdated_instances == []
    error_message = "instances launched from the current build are not outdated"
  }
}
