locals {
  # arn:<partition>:<service>:<region>:<account>:...
  secret_arn_parts = split(":", var.api_key_secret_arn)
  secret_service   = local.secret_arn_parts[2]
  secret_region    = local.secret_arn_parts[3]
  secret_store     = local.secret_service == "ssm" ? "aws-ssm" : "aws-secretsmanager"

  # AWS tag keys and values allow only letters, digits, spaces and _ . : / = + - @ (a space named "R&D" or
  # "Team (EU)" would fail the apply): anything else becomes "_", and keys/values are cut to 128/256 characters.
  tag_forbidden = "/[^\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]/"
  tags = { for k, v in merge(var.tags, {
    "octopus:fleet"      = var.name_prefix
    "octopus:space"      = var.octopus_space_name
    "octopus:workerpool" = var.worker_pool_name
  }) : substr(replace(k, local.tag_forbidden, "_"), 0, 128) => substr(replace(v, local.tag_forbidden, "_"), 0, 256) }

  # Polling address: Octopus Cloud (<instance>.octopus.app) takes polling Tentacles on
  # polling.<instance>.octopus.app:443 (Tentacle >= 6.3.417) besides 10943, which firewalls often block.
  server_host      = lower(regex("^https?://([^/:?#]+)", var.octopus_server_url)[0])
  octopus_cloud    = endswith(local.server_host, ".octopus.app")
  comms_port       = coalesce(var.server_comms_port, local.octopus_cloud ? 443 : 10943)
  comms_address_re = "^(?:https://)?([A-Za-z0-9.-]+)(?::([0-9]+))?/?$"
  comms_nodes      = [for a in var.server_comms_addresses : regex(local.comms_address_re, a)]
  comms_default    = [local.octopus_cloud ? "polling.${local.server_host}" : local.server_host, null]
  comms_primary = (var.server_comms_address != null ? regex(local.comms_address_re, var.server_comms_address)
  : length(local.comms_nodes) > 0 ? local.comms_nodes[0] : local.comms_default)
  # The first registers the worker; every further one is another HA node the Tentacle polls (poll-server).
  server_comms_addresses = distinct([
    for a in concat([local.comms_primary], local.comms_nodes) : "https://${lower(a[0])}:${coalesce(a[1], local.comms_port)}"
  ])

  # The group holds instance_count current instances plus the outdated ones still draining (surge).
  group_size = var.instance_count + var.surge_instances

  bootstrap_template = coalesce(var.bootstrap_script_path, "${path.module}/../../configure-tentacle.sh")
  # Every placeholder of configure-tentacle.sh; the same keys in every cloud module. No secret: only its ARN.
  bootstrap_vars = {
    octopus_server_url           = var.octopus_server_url
    octopus_space_name           = var.octopus_space_name
    worker_pool_name             = var.worker_pool_name
    machine_policy_name          = var.machine_policy_name
    name_prefix                  = var.name_prefix
    server_comms_addresses       = local.server_comms_addresses
    secret_read_timeout_seconds  = var.secret_read_timeout_minutes * 60
    health_check_port            = 0 # AWS: the instance reports itself to the group (set-instance-health)
    octopus_apt_key_fingerprints = var.octopus_apt_key_fingerprints
    secret_store                 = local.secret_store
    secret_ref                   = var.api_key_secret_arn
    azure_client_id              = ""
    tentacle_version             = var.tentacle_version
    install_docker               = var.install_docker
    install_powershell           = var.install_powershell
    worker_tools_image           = var.worker_tools_image
  }
}

locals {
  # What an instance is built from: a change makes every running instance *outdated* (tagged with another build).
  # A new launch template version only reaches instances launched afterwards (no instance refresh); the package
  # adds new instances first, shares them, then drains and removes the outdated ones by name.
  user_data = base64gzip(templatefile(local.bootstrap_template, local.bootstrap_vars))
  build = substr(sha256(jsonencode({
    image_id            = var.ami_id
    instance_type       = var.instance_type
    user_data           = local.user_data
    root_volume_size_gb = var.root_volume_size_gb
    root_volume_kms     = var.root_volume_kms_key_id
    public_ip           = var.associate_public_ip_address
    security_group_ids  = var.security_group_ids
  })), 0, 16)
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

# An instance whose bootstrap fails marks itself unhealthy, so the group replaces it instead of keeping a VM
# that passes its EC2 checks and never appears in Octopus.
data "aws_iam_policy_document" "report_health" {
  statement {
    sid       = "ReportOwnHealthToTheFleet"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = [aws_autoscaling_group.workers.arn]
  }
}

resource "aws_iam_role_policy" "report_health" {
  name   = "report-octopus-worker-health"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.report_health.json
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
  #checkov:skip=CKV_AWS_382:A polling worker only connects out, to Octopus (443/10943), package feeds and whatever its deployments target; bring your own groups (security_group_ids) to narrow it.
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
  #checkov:skip=CKV_AWS_46:False positive: the user data holds the secret's ARN, never the key (tests/terraform prove it); the base64 it carries is the rendered settings.
  name_prefix            = "${var.name_prefix}-"
  description            = "Octopus polling worker (${var.octopus_space_name} / ${var.worker_pool_name})"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  # gzip: cloud-init unpacks it, and it leaves headroom under EC2's 16 KB user data limit.
  user_data = local.user_data

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = var.associate_public_ip_address
    delete_on_termination       = true
    security_groups             = length(var.security_group_ids) > 0 ? var.security_group_ids : aws_security_group.worker[*].id
  }

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
    tags          = merge(local.tags, { Name = var.name_prefix, "octopus:build" = local.build })
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

# The package picks every instance that leaves (include/terraform/README.md, "Who removes an instance"):
# instance_count is the size, written here; a lower one only after the package has removed the instances it
# named (remove_instances: terraform-fleet.sh terminates each in the group with a capacity decrement before the
# plan), so this apply never lowers desired_capacity itself, and the cloud never chooses.
resource "aws_autoscaling_group" "workers" {
  name = var.name_prefix
  # 0: a named termination with decrement may take the group below the old count (AWS refuses to go below min_size).
  min_size                  = 0
  max_size                  = local.group_size
  desired_capacity          = local.group_size
  vpc_zone_identifier       = var.subnet_ids
  health_check_type         = "EC2"
  health_check_grace_period = 300

  # New instances are protected from scale-in from InService: a lower desired capacity (a console edit, a policy)
  # cannot terminate one; only the package's named termination does.
  protect_from_scale_in = true
  # AZRebalance would terminate instances to even out the zones after a named termination; InstanceRefresh (none is
  # configured: a new launch template version only applies to instances launched from now on, and the package
  # replaces the old ones by adding new instances first, then draining and removing the old) is suspended so a
  # refresh started by hand cannot roll the fleet either. ReplaceUnhealthy stays: it only replaces instances whose
  # EC2 status checks fail (already lost) or that marked themselves unhealthy before registering (never busy).
  suspended_processes = ["AZRebalance", "InstanceRefresh"]

  launch_template {
    id      = aws_launch_template.worker.id
    version = aws_launch_template.worker.latest_version
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

# ---- Inventory: the instances the group runs now (read after the group has its capacity) ----

data "aws_instances" "workers" {
  instance_tags = {
    "aws:autoscaling:groupName" = aws_autoscaling_group.workers.name
  }
  instance_state_names = ["running"]

  depends_on = [aws_autoscaling_group.workers]
}

# The running instances launched from the current build (tag octopus:build): every other one is outdated.
data "aws_instances" "current" {
  instance_tags = {
    "aws:autoscaling:groupName" = aws_autoscaling_group.workers.name
    "octopus:build"             = local.build
  }
  instance_state_names = ["running"]

  depends_on = [aws_autoscaling_group.workers]
}

locals {
  # Each instance registers as <name_prefix>-<instance id> (configure-tentacle.sh derives it from IMDS the same way).
  instances = [for id in sort(data.aws_instances.workers.ids) : {
    name = replace(lower("${var.name_prefix}-${id}"), "/[^a-z0-9-]/", "-")
    id   = id
  }]
  outdated_instances = [for i in local.instances : i.name if !contains(data.aws_instances.current.ids, i.id)]
}

# The instances the package named for removal are gone (terraform-fleet.sh removes them before the plan and fails
# the run if one is still listed after the apply; this says so in any plan as well).
check "named_instances_are_removed" {
  assert {
    # Known in a plan when nothing is named (the inventory is read after apply).
    condition     = length(var.remove_instances) == 0 ? true : length(setintersection(toset(var.remove_instances), toset([for i in local.instances : i.name]))) == 0
    error_message = "Named for removal but still running: ${join(", ", setintersection(toset(var.remove_instances), toset([for i in local.instances : i.name])))}."
  }
}
