# Partial backend configuration: terraform init -backend-config=backend.hcl
# The state bucket is created once by hand, before the first apply, with
# versioning and default encryption on (see terraform/README.md).
bucket = "ctr-terraform-state-staging"
region = "us-east-1"
