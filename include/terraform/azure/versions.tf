terraform {
  required_version = ">= 1.5"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.55, < 6.0" # 4.55: the schema the tests check; 5.x: current (see README.md)
    }
  }
  # No backend block: include/terraform-fleet.sh writes backend_override.tf (local state by default, or the
  # backend named by OCTOPUS_TF_BACKEND_AZURE, e.g. azurerm). See ../README.md.
}

provider "azurerm" {
  features {
    virtual_machine_scale_set {
      # Both default to true: a new image, size or custom data would make the provider roll or reimage running
      # VMs during the apply, killing the deployment steps on them. The package replaces VMs itself (new ones
      # first, then drains and deletes the old ones by instance id).
      roll_instances_when_required = false
      reimage_on_manual_upgrade    = false
    }
  }
  subscription_id = var.subscription_id # null: ARM_SUBSCRIPTION_ID
}
