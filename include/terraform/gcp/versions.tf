terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50, < 8.0" # 6.50: the schema the tests check; 7.x: current (see README.md)
    }
  }
  # No backend block: include/terraform-fleet.sh writes backend_override.tf (local state by default, or the
  # backend named by OCTOPUS_TF_BACKEND_GCP, e.g. gcs). See ../README.md.
}

provider "google" {
  project = var.project_id
  region  = local.region
}
