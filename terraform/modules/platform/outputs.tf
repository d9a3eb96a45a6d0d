output "region" {
  description = "AWS region of the environment: AWS_REGION of the workers."
  value       = data.aws_region.current.name
}

output "cluster_name" {
  description = "Name of the EKS cluster (Karpenter's settings.clusterName, `aws eks update-kubeconfig --name`)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server (Karpenter's settings.clusterEndpoint, Argo CD cluster secret)."
  value       = module.eks.cluster_endpoint
}

output "queue_url" {
  description = "URL of the scoring queue: QUEUE_URL in the ctr-worker ConfigMap and queueURL of the ScaledObject's aws-sqs-queue trigger."
  value       = module.queue.queue_url
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue, for `ctr redrive`."
  value       = module.queue.dead_letter_queue_url
}

output "worker_role_arn" {
  description = "ARN of the worker role: eks.amazonaws.com/role-arn annotation of the ctr-worker service account."
  value       = module.identities.worker_role_arn
}

output "keda_role_arn" {
  description = "ARN of the KEDA operator role: eks.amazonaws.com/role-arn annotation of KEDA's service account."
  value       = module.identities.keda_role_arn
}

output "karpenter_controller_role_arn" {
  description = "ARN of the Karpenter controller role: eks.amazonaws.com/role-arn annotation of Karpenter's service account."
  value       = module.eks.karpenter_controller_role_arn
}

output "karpenter_node_role_name" {
  description = "Name of the IAM role of Karpenter's nodes: spec.role of every EC2NodeClass."
  value       = module.eks.karpenter_node_role_name
}

output "karpenter_interruption_queue_name" {
  description = "Name of Karpenter's interruption queue: settings.interruptionQueue."
  value       = module.eks.karpenter_interruption_queue_name
}

output "karpenter_discovery_tag" {
  description = "Value of the karpenter.sh/discovery tag for the EC2NodeClass subnet and security group selectors."
  value       = module.eks.karpenter_discovery_tag
}

output "ci_role_arn" {
  description = "ARN of the role that CircleCI assumes through OIDC."
  value       = module.identities.ci_role_arn
}

output "registry_url" {
  description = "ECR repository URL: the image name in the GitOps overlays (the tag is <model>-v<version>-<git short sha>)."
  value       = module.registry.repository_url
}

output "promoted_tag_prefix" {
  description = "Prefix of the tag that the pipeline adds on promotion so that the ECR lifecycle policy keeps the image."
  value       = module.registry.promoted_tag_prefix
}

output "bucket_names" {
  description = "Names of the data buckets by purpose: raw-logs, features, predictions, models, mlflow-artifacts."
  value       = module.storage.bucket_names
}

output "model_store_uri" {
  description = "MODEL_STORE_URI of the workers: the S3 prefix with one bundle per model version."
  value       = module.storage.model_store_uri
}

output "mlflow_artifact_root" {
  description = "S3 URI for MLflow's artifact root."
  value       = module.storage.mlflow_artifact_root
}

output "alarm_topic_arn" {
  description = "ARN of the SNS topic of the scoring alarms."
  value       = module.alarms.alarm_topic_arn
}

output "worker_config" {
  description = "Values of the ctr-worker ConfigMap that come from this environment's infrastructure, keyed by environment variable name."
  value = {
    AWS_REGION         = data.aws_region.current.name
    QUEUE_URL          = module.queue.queue_url
    PREDICTIONS_BUCKET = module.storage.predictions_bucket
    MODEL_STORE_URI    = module.storage.model_store_uri
  }
}
