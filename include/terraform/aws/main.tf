locals {
  # arn:<partition>:<service>:<region>:<account>:...
  secret_arn_parts = split(":", var.api_key_secret_arn)
  secret_service   = local.secret_arn_parts[2]
  secret_region    = local.secret_arn_parts[3]
  secret_store     = local.secret_service == "ssm" ? "aws-ssm" : "aws-secretsmanager"

  tags = merge(var.tags, {
    "octopus:fleet"      = var.name_prefix
    "octopus:space"      = var.octopus_space_name
    "octopus:workerpool" = var.worker_pool_name
  })

  bootstrap_template = coalesce(var.bootstrap_script_path, "${path.module}/../../configure-tentacle.sh")
  # Every placeholder of configure-tentacle.sh; the same keys in every cloud module. No secret: only its ARN.
  bootstrap_vars = {
    octopus_server_url  = var.octopus_server_url
    octopus_space_name  = var.octopus_space_name
    worker_pool_name    = var.worker_pool_name
    machine_policy_name = var.machine_policy_name
    name_prefix         = var.name_prefix
    server_comms_port   = var.server_comms_port
    secret_store        = local.secret_store
    secret_ref          = var.api_key_secret_arn
    azure_client_id     = ""
    tentacle_version    = var.tentacle_version
    install_docker      = var.install_docker
    install_powershell  = var.install_powershell
    worker_tools_image  = var.worker_tools_image
  }
}

# ---- Identity: the instances may read the one secret, nothing else ----

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "read_api_key" {
  statement {
    sid       = "ReadTheWorkerApiKey"
    actions   = local.secret_store == "aws-ssm" ? ["ssm:GetParameter"] : ["secretsmanager:GetSecretValue"]
    resources = [var.api_key_secret_arn]
  }

  dynamic "statement" {
    for_each = var.api_key_kms_key_arn == null ? [] : [var.api_key_kms_key_arn]
    content {
      sid       = "DecryptTheWorkerApiKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["${local.secret_service}.${local.secret_region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.name_prefix}-"
  description        = "Octopus workers ${var.name_prefix}: read the worker API key only"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "read_api_key" {
  name   = "read-octopus-worker-api-key"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.read_api_key.json
}

resource "aws_iam_instance_profile" "worker" {
  name_prefix = "${var.name_prefix}-"
  role        = aws_iam_role.worker.name
}

# ---- Network: egress only, unless the operator brings security groups ----

data "aws_subnet" "first" {
  id = var.subnet_ids[0]
}

resource "aws_security_group" "worker" {
  count       = length(var.security_group_ids) == 0 ? 1 : 0
  name_prefix = "${var.name_prefix}-"
  description = "Octopus polling workers ${var.name_prefix}: no ingress, all egress"
  vpc_id      = data.aws_subnet.first.vpc_id

  egress {
    description      = "Octopus Server, polling port and package repositories"
    from_port        = 0
    to_port          = 0
    protocol         = "-1"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

# ---- Launch template + autoscaling group ----

resource "aws_launch_template" "worker" {
  name_prefix            = "${var.name_prefix}-"
  description            = "Octopus polling worker (${var.octopus_space_name} / ${var.worker_pool_name})"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  vpc_security_group_ids = length(var.security_group_ids) > 0 ? var.security_group_ids : aws_security_group.worker[*].id
  user_data              = base64encode(templatefile(local.bootstrap_template, local.bootstrap_vars))

  iam_instance_profile {
    arn = aws_iam_instance_profile.worker.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # containers on the worker cannot reach the instance credentials
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/sda1" # Ubuntu's root device
    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.root_volume_kms_key_id
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = var.name_prefix })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = var.name_prefix })
  }

  lifecycle {
    precondition {
      condition     = fileexists(local.bootstrap_template)
      error_message = "The bootstrap template ${local.bootstrap_template} does not exist; keep this module at include/terraform/aws next to include/configure-tentacle.sh or set bootstrap_script_path."
    }
    precondition {
      condition     = var.worker_tools_image == "" || var.install_docker
      error_message = "worker_tools_image needs install_docker = true (the image is pulled with Docker)."
    }
  }
}

resource "aws_autoscaling_group" "workers" {
  name                      = var.name_prefix
  min_size                  = var.instance_count
  max_size                  = var.instance_count
  desired_capacity          = var.instance_count
  vpc_zone_identifier       = var.subnet_ids
  health_check_type         = "EC2"
  health_check_grace_period = 300

  launch_template {
    id      = aws_launch_template.worker.id
    version = aws_launch_template.worker.latest_version
  }

  # A new launch template version (script, AMI, size...) rolls the fleet instead of waiting for the next rebuild.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = var.name_prefix })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
