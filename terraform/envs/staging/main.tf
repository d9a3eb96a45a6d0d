# Staging: the same wiring as prod with a single NAT gateway and shorter
# prediction retention. Every value that the GitOps overlay for staging
# needs is an output (outputs.tf).

module "platform" {
  source = "../../modules/platform"

  environment        = "staging"
  availability_zones = var.availability_zones
  vpc_cidr_block     = "10.40.0.0/16"
  single_nat_gateway = true

  kubernetes_version           = "1.32"
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  access_entries               = var.access_entries

  # Must match HEARTBEAT_SECONDS of the ctr-worker ConfigMap in gitops/;
  # tests/terraform checks both against each other.
  worker_heartbeat_seconds         = 30
  queue_visibility_timeout_seconds = 300
  max_receive_count                = 5

  predictions_retention_days = 31
  keep_promoted_images       = 100

  circleci_org_id            = var.circleci_org_id
  circleci_project_ids       = var.circleci_project_ids
  circleci_oidc_provider_arn = var.circleci_oidc_provider_arn
  alarm_email_addresses      = var.alarm_email_addresses
}
