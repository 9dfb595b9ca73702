terraform {
  # terraform_data (built in since 1.4) is the only resource: `terraform init` needs no provider download.
  required_version = ">= 1.5"
}
