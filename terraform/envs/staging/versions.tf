terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.95, < 6.0"
    }
  }

  # State in S3 with S3-native locking (use_lockfile, Terraform 1.10 and
  # later). The bucket and region come from backend.hcl:
  #   terraform init -backend-config=backend.hcl
  backend "s3" {
    key          = "ctr/staging/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
