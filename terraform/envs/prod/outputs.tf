output "region" {
  description = "AWS region: AWS_REGION of the workers."
  value       = module.platform.region
}

output "cluster_name" {
  description = "Name of the EKS cluster: Karpenter's settings.clusterName."
  value       = module.platform.cluster_name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server: Karpenter's settings.clusterEndpoint."
  value       = module.platform.cluster_endpoint
}

output "queue_url" {
  description = "QUEUE_URL of the ctr-worker ConfigMap and queueURL of the KEDA ScaledObject."
  value       = module.platform.queue_url
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue, for `ctr redrive`."
  value       = module.platform.dead_letter_queue_url
}

output "worker_role_arn" {
  description = "eks.amazonaws.com/role-arn annotation of the ctr-worker service account."
  value       = module.platform.worker_role_arn
}

output "keda_role_arn" {
  description = "eks.amazonaws.com/role-arn annotation of the KEDA operator's service account."
  value       = module.platform.keda_role_arn
}

output "karpenter_controller_role_arn" {
  description = "eks.amazonaws.com/role-arn annotation of the Karpenter controller's service account."
  value       = module.platform.karpenter_controller_role_arn
}

output "karpenter_node_role_name" {
  description = "spec.role of every EC2NodeClass."
  value       = module.platform.karpenter_node_role_name
}

output "karpenter_interruption_queue_name" {
  description = "Karpenter's settings.interruptionQueue."
  value       = module.platform.karpenter_interruption_queue_name
}

output "karpenter_discovery_tag" {
  description = "Value of the karpenter.sh/discovery tag in the EC2NodeClass selector terms."
  value       = module.platform.karpenter_discovery_tag
}

output "ci_role_arn" {
  description = "Role that CircleCI assumes through OIDC (AWS_ROLE_ARN in the pipeline's context)."
  value       = module.platform.ci_role_arn
}

output "registry_url" {
  description = "Image name of the inference images in the GitOps overlays."
  value       = module.platform.registry_url
}

output "promoted_tag_prefix" {
  description = "Prefix of the tag that the pipeline adds to an image on promotion."
  value       = module.platform.promoted_tag_prefix
}

output "bucket_names" {
  description = "Names of the data buckets by purpose."
  value       = module.platform.bucket_names
}

output "model_store_uri" {
  description = "MODEL_STORE_URI of the ctr-worker ConfigMap."
  value       = module.platform.model_store_uri
}

output "mlflow_artifact_root" {
  description = "Artifact root of the MLflow tracking server."
  value       = module.platform.mlflow_artifact_root
}

output "alarm_topic_arn" {
  description = "SNS topic of the scoring alarms."
  value       = module.platform.alarm_topic_arn
}

output "worker_config" {
  description = "ctr-worker ConfigMap entries that come from the infrastructure, keyed by environment variable name."
  value       = module.platform.worker_config
}
