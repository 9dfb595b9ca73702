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
  features {}
  subscription_id = var.subscription_id # null: ARM_SUBSCRIPTION_ID
}
