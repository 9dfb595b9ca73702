locals {
  region      = regex("regions/([^/]+)/subnetworks/", var.subnetwork)[0]
  secret_name = startswith(var.api_key_secret_id, "projects/") ? var.api_key_secret_id : "projects/${var.project_id}/secrets/${var.api_key_secret_id}"

  labels = merge(var.labels, {
    "octopus-fleet" = var.name_prefix
  })

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

  # Auto-healing waits this long after a VM starts: the bootstrap's secret budget plus the installs (max 3600 s).
  healing_delay_seconds = min(3600, var.secret_read_timeout_minutes * 60 + 900)

  # The group holds instance_count current instances plus the outdated ones still draining (surge).
  group_size = var.instance_count + var.surge_instances

  bootstrap_template = coalesce(var.bootstrap_script_path, "${path.module}/../../configure-tentacle.sh")
  # Every placeholder of configure-tentacle.sh; the same keys in every cloud module. No secret: only its name.
  bootstrap_vars = {
    octopus_server_url           = var.octopus_server_url
    octopus_space_name           = var.octopus_space_name
    worker_pool_name             = var.worker_pool_name
    machine_policy_name          = var.machine_policy_name
    name_prefix                  = var.name_prefix
    server_comms_addresses       = local.server_comms_addresses
    secret_read_timeout_seconds  = var.secret_read_timeout_minutes * 60
    health_check_port            = var.health_check_port
    octopus_apt_key_fingerprints = var.octopus_apt_key_fingerprints
    secret_store                 = "gcp-secretmanager"
    secret_ref                   = "${local.secret_name}/versions/${var.api_key_secret_version}"
    azure_client_id              = ""
    tentacle_version             = var.tentacle_version
    install_docker               = var.install_docker
    install_powershell           = var.install_powershell
    worker_tools_image           = var.worker_tools_image
  }
}

locals {
  # What an instance is built from: the instance template carries it as the label octopus-build, which every
  # instance created from it inherits. A new template reaches only instances created afterwards (OPPORTUNISTIC);
  # instances labelled with another build are outdated, drained and removed by name by the package.
  startup_script = templatefile(local.bootstrap_template, local.bootstrap_vars)
  build = substr(sha256(jsonencode({
    machine_type     = var.machine_type
    source_image     = var.source_image
    disk_size_gb     = var.disk_size_gb
    disk_type        = var.disk_type
    disk_kms         = var.disk_kms_key_self_link
    subnetwork       = var.subnetwork
    assign_public_ip = var.assign_public_ip
    startup_script   = local.startup_script
  })), 0, 16)
}

# ---- Identity: the instances may read the one secret, nothing else ----

resource "google_service_account" "worker" {
  account_id   = "${substr(var.name_prefix, 0, 21)}-worker"
  display_name = "Octopus workers ${var.name_prefix}"
  description  = "Octopus polling workers: read the registration API key only"
}

resource "google_secret_manager_secret_iam_member" "read_api_key" {
  secret_id = local.secret_name
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.worker.email}"
}

# ---- Health check for auto-healing ----

# No zombie VMs: the VM's health endpoint answers 200 only once the worker is registered and its Tentacle runs
# (configure-tentacle.sh), so a VM whose bootstrap failed is recreated instead of passing an sshd check forever.
resource "google_compute_health_check" "worker" {
  name                = "${var.name_prefix}-tentacle"
  description         = "Octopus workers ${var.name_prefix}: registered and the Tentacle service runs"
  check_interval_sec  = 30
  timeout_sec         = 10
  healthy_threshold   = 1
  unhealthy_threshold = 4

  http_health_check {
    port         = var.health_check_port
    request_path = "/healthz"
  }

  lifecycle {
    create_before_destroy = true # the group still uses the old check while it is replaced
  }
}

data "google_compute_subnetwork" "fleet" {
  count     = var.create_health_check_firewall_rule ? 1 : 0
  self_link = startswith(var.subnetwork, "https://") ? var.subnetwork : "https://www.googleapis.com/compute/v1/${var.subnetwork}"
}

resource "google_compute_firewall" "health_check" {
  count                   = var.create_health_check_firewall_rule ? 1 : 0
  name                    = "${var.name_prefix}-allow-health-check"
  network                 = data.google_compute_subnetwork.fleet[0].network
  direction               = "INGRESS"
  source_ranges           = ["35.191.0.0/16", "130.211.0.0/22"]
  target_service_accounts = [google_service_account.worker.email]

  allow {
    protocol = "tcp"
    ports    = [tostring(var.health_check_port)]
  }
}

# ---- Instance template + regional managed instance group ----

resource "google_compute_instance_template" "worker" {
  #checkov:skip=CKV_GCP_40:Public IPs are opt-in (assign_public_ip, default false) for subnetworks without Cloud NAT.
  name_prefix  = "${var.name_prefix}-"
  description  = "Octopus polling worker (${var.octopus_space_name} / ${var.worker_pool_name})"
  machine_type = var.machine_type
  labels       = merge(local.labels, { "octopus-build" = local.build })

  disk {
    source_image = var.source_image
    boot         = true
    auto_delete  = true
    disk_size_gb = var.disk_size_gb
    disk_type    = var.disk_type

    dynamic "disk_encryption_key" {
      for_each = var.disk_kms_key_self_link == null ? [] : [var.disk_kms_key_self_link]
      content {
        kms_key_self_link = disk_encryption_key.value
      }
    }
  }

  network_interface {
    subnetwork = var.subnetwork

    dynamic "access_config" {
      for_each = var.assign_public_ip ? [1] : []
      content {}
    }
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"] # IAM, not scopes, limits it: the account can read one secret
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    # Runs on every boot; configure-tentacle.sh is idempotent (register-worker --force).
    startup-script         = local.startup_script
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
  }

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = fileexists(local.bootstrap_template)
      error_message = "The bootstrap template ${local.bootstrap_template} does not exist; keep this module at include/terraform/gcp next to include/configure-tentacle.sh or set bootstrap_script_path."
    }
    precondition {
      condition     = var.worker_tools_image == "" || var.install_docker
      error_message = "worker_tools_image needs install_docker = true (the image is pulled with Docker)."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.read_api_key]
}

# The package picks every instance that leaves (include/terraform/README.md, "Who removes an instance"):
# instance_count is the target size, written here; a lower one only after the package has deleted the instances it
# named (remove_instances: terraform-fleet.sh calls deleteInstances, which lowers the target size by one each,
# before the plan), so this apply never lowers target_size itself, and the group never chooses.
resource "google_compute_region_instance_group_manager" "workers" {
  name               = var.name_prefix
  description        = "Octopus polling workers (${var.octopus_space_name} / ${var.worker_pool_name})"
  region             = local.region
  base_instance_name = var.name_prefix # instances get a random suffix: <name_prefix>-abcd, never reused
  target_size        = local.group_size
  # Apply returns once the group is stable, so the inventory below reads the instances it really runs.
  wait_for_instances        = true
  wait_for_instances_status = "STABLE"

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.worker.self_link_unique
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.worker.id
    initial_delay_sec = local.healing_delay_seconds
  }

  # A new template (script, image, size...) never rolls the fleet: OPPORTUNISTIC applies it only to instances the
  # group creates anyway (a larger target size, auto-healing), and the package replaces the others by adding new
  # instances first, then draining and removing the old ones by name. NONE: the group never deletes an instance
  # to even out its zones (after the package deleted a named one, say). Surge first, never below target size.
  update_policy {
    type                         = "OPPORTUNISTIC"
    minimal_action               = "REPLACE"
    instance_redistribution_type = "NONE"
    max_surge_fixed              = 3 # a regional MIG needs 0 or at least its zone count (3 by default)
    max_unavailable_fixed        = 0
  }
}

# ---- Inventory: the instances the group runs now (read after the group is stable) ----

data "google_compute_region_instance_group" "workers" {
  self_link = google_compute_region_instance_group_manager.workers.instance_group

  lifecycle {
    postcondition {
      condition     = length(self.instances) == local.group_size
      error_message = "The managed instance group ${var.name_prefix} runs ${length(self.instances)} instances, expected ${local.group_size} (instance_count ${var.instance_count} + ${var.surge_instances} outdated)."
    }
  }
}

# Per instance for its numeric id: MIG names repeat (auto-healing recreates a VM under the same name), ids do not.
data "google_compute_instance" "workers" {
  count     = local.group_size
  self_link = sort(data.google_compute_region_instance_group.workers.instances[*].instance)[count.index]
}

locals {
  # configure-tentacle.sh registers each VM under its instance name (<name_prefix>-<random suffix>).
  instances          = [for i in data.google_compute_instance.workers : { name = i.name, id = i.instance_id }]
  outdated_instances = [for i in data.google_compute_instance.workers : i.name if lookup(i.labels, "octopus-build", "") != local.build]
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
