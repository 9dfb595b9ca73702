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

run "user_data_is_the_rendered_bootstrap_with_the_secret_reference_only" {
  command = plan

  assert {
    condition     = strcontains(base64decode(aws_launch_template.worker.user_data), "register-worker")
    error_message = "user data is not the rendered configure-tentacle.sh"
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.worker.user_data), base64encode(var.api_key_secret_arn))
    error_message = "user data does not carry the secret ARN"
  }
  assert {
    condition     = strcontains(base64decode(aws_launch_template.worker.user_data), base64encode("aws-secretsmanager"))
    error_message = "a secretsmanager ARN must select the aws-secretsmanager store"
  }
}

run "group_is_sized_to_instance_count_and_outputs_follow_the_contract" {
  command = plan

  assert {
    condition     = aws_autoscaling_group.workers.min_size == 3 && aws_autoscaling_group.workers.max_size == 3 && aws_autoscaling_group.workers.desired_capacity == 3
    error_message = "the autoscaling group must hold exactly instance_count instances"
  }
  assert {
    condition     = output.instance_count == 3 && output.name_prefix == "octo-w" && length(output.worker_names) == 0
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
    condition     = strcontains(base64decode(aws_launch_template.worker.user_data), base64encode("aws-ssm"))
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
