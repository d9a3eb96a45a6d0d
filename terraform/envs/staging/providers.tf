provider "aws" {
  region              = var.region
  allowed_account_ids = [var.aws_account_id]

  default_tags {
    tags = {
      Project     = "ctr"
      Environment = "staging"
      ManagedBy   = "terraform"
      Repository  = "terraform/envs/staging"
    }
  }
}
