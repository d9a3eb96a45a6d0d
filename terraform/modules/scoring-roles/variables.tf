variable "worker_role_name" {
  type        = string
  description = "Name of the worker role, for example ctr-staging-worker."
}

variable "dispatch_role_name" {
  type        = string
  description = "Name of the dispatcher role, for example ctr-staging-dispatch."
}

variable "namespace" {
  type        = string
  description = "Namespace of the worker Deployment and the dispatcher CronJob."
  default     = "ctr"
}

variable "worker_service_account" {
  type        = string
  description = "Service account of the worker pods, as the rendered GitOps overlay names it (for example ctr-worker)."
}

variable "dispatch_service_account" {
  type        = string
  description = "Service account of the dispatcher CronJob, as the rendered GitOps overlay names it (for example ctr-dispatch)."
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

variable "keda_role_arn" {
  type        = string
  description = "ARN of the KEDA operator's role, which may assume the worker role to read the queue depth."
}

variable "oidc_provider_arn" {
  type        = string
  description = "ARN of the cluster's IAM OIDC provider (IRSA)."
}

variable "oidc_issuer" {
  type        = string
  description = "OIDC issuer of the cluster without https://, the prefix of the :sub and :aud condition keys."
}

variable "queue_arn" {
  type        = string
  description = "ARN of the queue of this stack. Pass the scoring queue only: neither role gets a permission on a dead-letter queue."
}

variable "queue_kms_key_arn" {
  type        = string
  description = "ARN of the KMS key that encrypts the queue."
}

variable "features_bucket_arn" {
  type        = string
  description = "ARN of the feature bucket."
}

variable "predictions_bucket_arn" {
  type        = string
  description = "ARN of the predictions bucket."
}

variable "predictions_prefix" {
  type        = string
  description = "Key prefix under which this stack writes its predictions and run files: PREDICTIONS_PREFIX of its ConfigMap, for example predictions/."

  validation {
    condition     = can(regex("^([a-z0-9][a-z0-9_-]*/)+$", var.predictions_prefix))
    error_message = "predictions_prefix must be one or more lowercase path segments, each ending with a slash (for example predictions/), with no wildcard."
  }
}

variable "models_bucket_arn" {
  type        = string
  description = "ARN of the bucket that holds the model store under models/."
}

variable "data_kms_key_arn" {
  type        = string
  description = "ARN of the KMS key that encrypts the data buckets."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
