# One environment of the platform: wires the modules together so that both
# environment roots get the same wiring and differ only in their inputs.

data "aws_region" "current" {}

locals {
  name         = "ctr-${var.environment}"
  cluster_name = local.name
  tags         = merge(var.tags, { Environment = var.environment })

  # Where the scoring stacks write. The storage module expires comparisons/
  # sooner than predictions/.
  predictions_prefix               = "predictions/"
  s3_comparison_predictions_prefix = "comparisons/s3-source/predictions/"

  # Namespace of the workloads, as gitops/base/kustomization.yaml sets it.
  workload_namespace = "ctr"
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

  # The kustomize image name in gitops/ and IMAGE_REPOSITORY in the Makefile.
  repository_name      = "ctr-model"
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

# The side-by-side comparison of the S3 model source with the baked bundle
# (gitops/components/s3-comparison): its own queue, fed only by its own
# dispatcher, so the two Deployments never take each other's messages.
module "s3_comparison_queue" {
  source = "../queue"
  count  = var.s3_comparison_enabled ? 1 : 0

  name                       = "${local.name}-scoring-s3"
  worker_heartbeat_seconds   = var.worker_heartbeat_seconds
  visibility_timeout_seconds = var.queue_visibility_timeout_seconds
  max_receive_count          = var.max_receive_count
  receive_s3_notifications   = false
  tags                       = local.tags
}

module "identities" {
  source = "../identities"

  name              = local.name
  cluster_name      = module.eks.cluster_name
  cluster_arn       = module.eks.cluster_arn
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer       = module.eks.oidc_issuer

  worker_role_arns = concat([module.scoring_roles.worker_role_arn], module.s3_comparison_roles[*].worker_role_arn)

  features_bucket_arn         = module.storage.bucket_arns["features"]
  models_bucket_arn           = module.storage.bucket_arns["models"]
  mlflow_artifacts_bucket_arn = module.storage.bucket_arns["mlflow-artifacts"]
  data_kms_key_arn            = module.storage.kms_key_arn
  repository_arn              = module.registry.repository_arn

  circleci_org_id            = var.circleci_org_id
  circleci_project_ids       = var.circleci_project_ids
  circleci_oidc_provider_arn = var.circleci_oidc_provider_arn

  tags = local.tags
}

# Roles of the main Deployment ctr-worker and the CronJob ctr-dispatch.
module "scoring_roles" {
  source = "../scoring-roles"

  worker_role_name         = "${local.name}-worker"
  dispatch_role_name       = "${local.name}-dispatch"
  namespace                = local.workload_namespace
  worker_service_account   = "ctr-worker"
  dispatch_service_account = "ctr-dispatch"
  keda_role_arn            = module.identities.keda_role_arn
  oidc_provider_arn        = module.eks.oidc_provider_arn
  oidc_issuer              = module.eks.oidc_issuer

  # The scoring queue only: the roles have no business with the dead-letter
  # queue, which operators drain with `ctr redrive`.
  queue_arn         = module.queue.queue_arn
  queue_kms_key_arn = module.queue.kms_key_arn

  features_bucket_arn    = module.storage.bucket_arns["features"]
  predictions_bucket_arn = module.storage.bucket_arns["predictions"]
  predictions_prefix     = local.predictions_prefix
  models_bucket_arn      = module.storage.bucket_arns["models"]
  data_kms_key_arn       = module.storage.kms_key_arn

  tags = local.tags
}

# Roles of the comparison Deployment ctr-worker-s3 and the CronJob ctr-dispatch-s3.
module "s3_comparison_roles" {
  source = "../scoring-roles"
  count  = var.s3_comparison_enabled ? 1 : 0

  worker_role_name         = "${local.name}-worker-s3"
  dispatch_role_name       = "${local.name}-dispatch-s3"
  namespace                = local.workload_namespace
  worker_service_account   = "ctr-worker-s3"
  dispatch_service_account = "ctr-dispatch-s3"
  keda_role_arn            = module.identities.keda_role_arn
  oidc_provider_arn        = module.eks.oidc_provider_arn
  oidc_issuer              = module.eks.oidc_issuer

  queue_arn         = module.s3_comparison_queue[0].queue_arn
  queue_kms_key_arn = module.s3_comparison_queue[0].kms_key_arn

  features_bucket_arn    = module.storage.bucket_arns["features"]
  predictions_bucket_arn = module.storage.bucket_arns["predictions"]
  predictions_prefix     = local.s3_comparison_predictions_prefix
  models_bucket_arn      = module.storage.bucket_arns["models"]
  data_kms_key_arn       = module.storage.kms_key_arn

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
