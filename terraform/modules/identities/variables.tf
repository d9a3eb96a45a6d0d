variable "name" {
  type        = string
  description = "Prefix of the IAM role names, for example ctr-staging."
}

variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster; the CI role gets a read-only access entry on it."
}

variable "cluster_arn" {
  type        = string
  description = "ARN of the EKS cluster, for the CI role's eks:DescribeCluster."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider (IRSA)."
}

variable "oidc_issuer" {
  type        = string
  description = "OIDC issuer of the cluster without https://, the prefix of the :sub and :aud condition keys."
}

variable "worker_namespace" {
  type        = string
  description = "Namespace of the inference Deployment."
  default     = "ctr"
}

variable "worker_service_account" {
  type        = string
  description = "Service account of the inference workers; its eks.amazonaws.com/role-arn annotation names the worker role."
  default     = "ctr-worker"
}

variable "keda_namespace" {
  type        = string
  description = "Namespace of the KEDA operator."
  default     = "keda"
}

variable "keda_service_account" {
  type        = string
  description = "Service account of the KEDA operator (the Helm chart's default is keda-operator)."
  default     = "keda-operator"
}

variable "queue_arn" {
  type        = string
  description = "ARN of the scoring queue. Pass the scoring queue only: the worker gets no permission on the dead-letter queue."
}

variable "queue_kms_key_arn" {
  type        = string
  description = "ARN of the KMS key that encrypts the scoring queue."
}

variable "features_bucket_arn" {
  type        = string
  description = "ARN of the feature bucket."
}

variable "predictions_bucket_arn" {
  type        = string
  description = "ARN of the predictions bucket."
}

variable "models_bucket_arn" {
  type        = string
  description = "ARN of the bucket that holds the model store under models/."
}

variable "mlflow_artifacts_bucket_arn" {
  type        = string
  description = "ARN of the MLflow artifacts bucket."
}

variable "data_kms_key_arn" {
  type        = string
  description = "ARN of the KMS key that encrypts the data buckets."
}

variable "repository_arn" {
  type        = string
  description = "ARN of the ECR repository that CI pushes inference images to."
}

variable "circleci_org_id" {
  type        = string
  description = "CircleCI organization ID (a UUID, under Organization Settings > Overview). It is the audience of CircleCI's OIDC tokens."

  validation {
    condition     = can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.circleci_org_id))
    error_message = "circleci_org_id must be a lowercase UUID."
  }
}

variable "circleci_project_ids" {
  type        = list(string)
  description = "CircleCI project IDs (UUIDs) whose jobs may assume the CI role."

  validation {
    condition     = length(var.circleci_project_ids) > 0 && alltrue([for id in var.circleci_project_ids : can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", id))])
    error_message = "circleci_project_ids must list at least one lowercase UUID."
  }
}

variable "circleci_oidc_provider_arn" {
  type        = string
  description = "ARN of an existing IAM OIDC provider for oidc.circleci.com/org/<org id>. An account holds only one provider per URL, so set this when another stack already created it; null creates it here."
  default     = null
}

variable "ci_kubernetes_namespaces" {
  type        = list(string)
  description = "Namespaces in which the CI role may read (AmazonEKSViewPolicy) to wait on rollouts."
  default     = ["ctr"]

  validation {
    condition     = length(var.ci_kubernetes_namespaces) > 0
    error_message = "ci_kubernetes_namespaces must list at least one namespace; the CI role gets no cluster-wide access."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
