locals {
  region      = regex("regions/([^/]+)/subnetworks/", var.subnetwork)[0]
  secret_name = startswith(var.api_key_secret_id, "projects/") ? var.api_key_secret_id : "projects/${var.project_id}/secrets/${var.api_key_secret_id}"

  labels = merge(var.labels, {
    "octopus-fleet" = var.name_prefix
  })

  bootstrap_template = coalesce(var.bootstrap_script_path, "${path.module}/../../configure-tentacle.sh")
  # Every placeholder of configure-tentacle.sh; the same keys in every cloud module. No secret: only its name.
  bootstrap_vars = {
    octopus_server_url  = var.octopus_server_url
    octopus_space_name  = var.octopus_space_name
    worker_pool_name    = var.worker_pool_name
    machine_policy_name = var.machine_policy_name
    name_prefix         = var.name_prefix
    server_comms_port   = var.server_comms_port
    secret_store        = "gcp-secretmanager"
    secret_ref          = "${local.secret_name}/versions/${var.api_key_secret_version}"
    azure_client_id     = ""
    tentacle_version    = var.tentacle_version
    install_docker      = var.install_docker
    install_powershell  = var.install_powershell
    worker_tools_image  = var.worker_tools_image
  }
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

resource "google_compute_health_check" "worker" {
  name                = "${var.name_prefix}-ssh"
  description         = "Octopus workers ${var.name_prefix}: VM is up (sshd answers)"
  check_interval_sec  = 30
  timeout_sec         = 10
  healthy_threshold   = 1
  unhealthy_threshold = 4

  tcp_health_check {
    port = 22
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
    ports    = ["22"]
  }
}

# ---- Instance template + regional managed instance group ----

resource "google_compute_instance_template" "worker" {
  name_prefix  = "${var.name_prefix}-"
  description  = "Octopus polling worker (${var.octopus_space_name} / ${var.worker_pool_name})"
  machine_type = var.machine_type
  labels       = local.labels

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
    startup-script         = templatefile(local.bootstrap_template, local.bootstrap_vars)
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

resource "google_compute_region_instance_group_manager" "workers" {
  name               = var.name_prefix
  description        = "Octopus polling workers (${var.octopus_space_name} / ${var.worker_pool_name})"
  region             = local.region
  base_instance_name = var.name_prefix # instances get a random suffix: <name_prefix>-abcd, never reused
  target_size        = var.instance_count
  wait_for_instances = false

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.worker.self_link_unique
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.worker.id
    initial_delay_sec = 600
  }

  # A new template (script, image, size...) rolls the fleet: surge first, never below target size.
  update_policy {
    type                         = "PROACTIVE"
    minimal_action               = "REPLACE"
    instance_redistribution_type = "PROACTIVE"
    max_surge_fixed              = 3 # a regional MIG needs 0 or at least its zone count (3 by default)
    max_unavailable_fixed        = 0
  }
}
