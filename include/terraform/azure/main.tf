data "azurerm_resource_group" "fleet" {
  name = var.resource_group_name
}

locals {
  location       = coalesce(var.location, data.azurerm_resource_group.fleet.location)
  key_vault_name = element(split("/", var.key_vault_id), length(split("/", var.key_vault_id)) - 1)
  secret_url     = "https://${local.key_vault_name}.${var.key_vault_dns_suffix}/secrets/${var.api_key_secret_name}"

  tags = merge(var.tags, {
    "octopus-fleet"      = var.name_prefix
    "octopus-space"      = var.octopus_space_name
    "octopus-workerpool" = var.worker_pool_name
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

  # Instance repair waits this long after a VM starts before acting on its health: the bootstrap's secret budget
  # plus the installs (ISO 8601, 10-90 minutes).
  repair_grace_minutes = min(90, max(30, var.secret_read_timeout_minutes + 20))

  bootstrap_template = coalesce(var.bootstrap_script_path, "${path.module}/../../configure-tentacle.sh")
  # Every placeholder of configure-tentacle.sh; the same keys in every cloud module. No secret: only its URL.
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
    secret_store                 = "azure-keyvault"
    secret_ref                   = local.secret_url
    azure_client_id              = azurerm_user_assigned_identity.worker.client_id
    tentacle_version             = var.tentacle_version
    install_docker               = var.install_docker
    install_powershell           = var.install_powershell
    worker_tools_image           = var.worker_tools_image
  }
}

# ---- Identity: the instances may read the one secret, nothing else ----
# User-assigned, so the role assignment exists before the first VM boots.

resource "azurerm_user_assigned_identity" "worker" {
  name                = "${var.name_prefix}-worker"
  resource_group_name = data.azurerm_resource_group.fleet.name
  location            = local.location
  tags                = local.tags
}

resource "azurerm_role_assignment" "read_api_key" {
  scope                = "${var.key_vault_id}/secrets/${var.api_key_secret_name}"
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.worker.principal_id
  principal_type       = "ServicePrincipal"
  description          = "Octopus workers ${var.name_prefix} read their registration API key"
}

# ---- Scale set ----

# The package picks every instance that leaves (include/terraform/README.md, "Who removes an instance"):
# instance_count is the capacity, written here; a lower one only after the package has deleted the VMs it named
# (remove_instances: terraform-fleet.sh deletes each by instance id, which lowers the capacity by one each, before
# the plan), so this apply never lowers `instances` itself, and Azure's scale-in policy never chooses. No autoscale
# setting is attached, and a model change reaches no running VM: upgrade_mode Manual, and the provider neither
# rolls nor reimages instances (versions.tf).
resource "azurerm_linux_virtual_machine_scale_set" "workers" {
  name                = var.name_prefix
  resource_group_name = data.azurerm_resource_group.fleet.name
  location            = local.location
  sku                 = var.vm_size
  # instance_count current VMs plus the outdated ones still draining (surge_instances, set by the runner).
  instances = var.instance_count + var.surge_instances
  # Over-provisioned VMs boot (and run custom data) before Azure deletes them: they would register as extra workers.
  overprovision        = false
  upgrade_mode         = "Manual"
  computer_name_prefix = var.name_prefix
  zones                = length(var.zones) > 0 ? var.zones : null
  zone_balance         = length(var.zones) > 1
  custom_data          = base64encode(templatefile(local.bootstrap_template, local.bootstrap_vars))

  admin_username                  = var.admin_username
  disable_password_authentication = true
  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }

  secure_boot_enabled        = true
  vtpm_enabled               = true
  encryption_at_host_enabled = var.encryption_at_host_enabled

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = var.os_disk_storage_account_type
    disk_size_gb         = var.os_disk_size_gb
  }

  network_interface {
    name    = "${var.name_prefix}-nic"
    primary = true

    ip_configuration {
      name      = "internal"
      primary   = true
      subnet_id = var.subnet_id
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.worker.id]
  }

  boot_diagnostics {}

  # No zombie VMs: the Application Health extension reads the VM's health endpoint (on 127.0.0.1), which only
  # answers 200 once the worker is registered and its Tentacle runs; unhealthy VMs are replaced after the grace period.
  extension {
    name                       = "HealthExtension"
    publisher                  = "Microsoft.ManagedServices"
    type                       = "ApplicationHealthLinux"
    type_handler_version       = "2.0"
    auto_upgrade_minor_version = true
    settings = jsonencode({
      protocol          = "http"
      port              = var.health_check_port
      requestPath       = "/healthz"
      intervalInSeconds = 30
      numberOfProbes    = 3
    })
  }

  automatic_instance_repair {
    enabled      = true
    grace_period = "PT${local.repair_grace_minutes}M"
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = fileexists(local.bootstrap_template)
      error_message = "The bootstrap template ${local.bootstrap_template} does not exist; keep this module at include/terraform/azure next to include/configure-tentacle.sh or set bootstrap_script_path."
    }
    precondition {
      condition     = var.worker_tools_image == "" || var.install_docker
      error_message = "worker_tools_image needs install_docker = true (the image is pulled with Docker)."
    }
  }

  depends_on = [azurerm_role_assignment.read_api_key]
}

# ---- Inventory: the VMs the scale set runs now (read after the scale set) ----

data "azurerm_virtual_machine_scale_set" "workers" {
  name                = azurerm_linux_virtual_machine_scale_set.workers.name
  resource_group_name = data.azurerm_resource_group.fleet.name

  depends_on = [azurerm_linux_virtual_machine_scale_set.workers]
}

locals {
  # configure-tentacle.sh names each VM the same way from IMDS: <prefix>-<VMSS instance id>-<vmId[:8]>.
  instances = [for i in data.azurerm_virtual_machine_scale_set.workers.instances : {
    name = replace(lower("${var.name_prefix}-${i.instance_id}-${substr(i.virtual_machine_id, 0, 8)}"), "/[^a-z0-9-]/", "-")
    id   = lower(i.virtual_machine_id)
  }]
  # A model change (script, image, size...) reaches no running VM (upgrade_mode Manual): those VMs report
  # latest_model_applied = false and are outdated; VMs the scale set adds afterwards run the new model.
  outdated_instances = [for i in data.azurerm_virtual_machine_scale_set.workers.instances :
    replace(lower("${var.name_prefix}-${i.instance_id}-${substr(i.virtual_machine_id, 0, 8)}"), "/[^a-z0-9-]/", "-")
  if !i.latest_model_applied]
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
