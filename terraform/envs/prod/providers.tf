provider "aws" {
  region              = var.region
  allowed_account_ids = [var.aws_account_id]

  default_tags {
    tags = {
      Project     = "ctr"
      Environment = "prod"
      ManagedBy   = "terraform"
      Repository  = "terraform/envs/prod"
    }
  }
}
