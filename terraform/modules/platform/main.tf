# One environment of the platform: wires the modules together so that both
# environment roots get the same wiring and differ only in their inputs.

data "aws_region" "current" {}

locals {
  name         = "ctr-${var.environment}"
  cluster_name = local.name
  tags         = merge(var.tags, { Environment = var.environment })
}

module "network" {
  source = "../network"

  name               = local.name
  cidr_block         = var.vpc_cidr_block
  availability_zones = var.availability_zones
  cluster_name       = local.cluster_name
  single_nat_gateway = var.single_nat_gateway
  tags               = local.tags
}

module "storage" {
  source = "../storage"

  name                       = local.name
  predictions_retention_days = var.predictions_retention_days
  tags                       = local.tags
}

module "queue" {
  source = "../queue"

  name                       = "${local.name}-scoring"
  worker_heartbeat_seconds   = var.worker_heartbeat_seconds
  visibility_timeout_seconds = var.queue_visibility_timeout_seconds
  max_receive_count          = var.max_receive_count
  features_bucket_name       = module.storage.features_bucket
  tags                       = local.tags
}

module "registry" {
  source = "../registry"

  repository_name      = "ctr/inference"
  keep_promoted_images = var.keep_promoted_images
  tags                 = local.tags
}

module "eks" {
  source = "../eks"

  cluster_name                 = local.cluster_name
  kubernetes_version           = var.kubernetes_version
  private_subnet_ids           = module.network.private_subnet_ids
  endpoint_public_access_cidrs = var.endpoint_public_access_cidrs
  access_entries               = var.access_entries
  system_node_count            = var.system_node_count
  system_node_instance_types   = var.system_node_instance_types
  addon_versions               = var.addon_versions
  tags                         = local.tags
}

module "identities" {
  source = "../identities"

  name              = local.name
  cluster_name      = module.eks.cluster_name
  cluster_arn       = module.eks.cluster_arn
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer

  # The scoring queue only: the worker has no business with the dead-letter
  # queue, which operators drain with `ctr redrive`.
  queue_arn         = module.queue.queue_arn
  queue_kms_key_arn = module.queue.kms_key_arn

  features_bucket_arn         = module.storage.bucket_arns["features"]
  predictions_bucket_arn      = module.storage.bucket_arns["predictions"]
  models_bucket_arn           = module.storage.bucket_arns["models"]
  mlflow_artifacts_bucket_arn = module.storage.bucket_arns["mlflow-artifacts"]
  data_kms_key_arn            = module.storage.kms_key_arn
  repository_arn              = module.registry.repository_arn

  circleci_org_id            = var.circleci_org_id
  circleci_project_ids       = var.circleci_project_ids
  circleci_oidc_provider_arn = var.circleci_oidc_provider_arn

  tags = local.tags
}

module "alarms" {
  source = "../alarms"

  name                         = local.name
  queue_name                   = module.queue.queue_name
  dead_letter_queue_name       = module.queue.dead_letter_queue_name
  deadline_seconds             = var.scoring_deadline_seconds
  oldest_message_alarm_seconds = var.oldest_message_alarm_seconds
  alarm_email_addresses        = var.alarm_email_addresses
  tags                         = local.tags
}
