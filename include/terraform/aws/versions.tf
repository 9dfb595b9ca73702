terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 7.0" # 5.100: the offline test mirror; 6.x: current (see README.md)
    }
  }
  # No backend block: include/terraform-fleet.sh writes backend_override.tf (local state by default, or the
  # backend named by OCTOPUS_TF_BACKEND_AWS, e.g. s3). See ../README.md.
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = local.tags
  }
}
