variable "name" {
  type        = string
  description = "Prefix of the bucket names, for example ctr-staging. Bucket names are <name>-<purpose>-<account id>, which keeps them globally unique."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,29}$", var.name))
    error_message = "name must be 1 to 30 lowercase letters, digits or hyphens, so that the longest bucket name stays within 63 characters."
  }
}

variable "raw_logs_retention_days" {
  type        = number
  description = "Days after which raw click logs (raw/) expire. They are the only copy of the source data, so keep at least a year for retraining and audits."
  default     = 400

  validation {
    condition     = var.raw_logs_retention_days >= 180
    error_message = "raw_logs_retention_days must be at least 180: raw logs move to Glacier Instant Retrieval at 90 days, which bills 90 days at least."
  }
}

variable "features_retention_days" {
  type        = number
  description = "Days after which feature partitions (features/) expire. The Spark job can recompute them from raw logs."
  default     = 180

  validation {
    condition     = var.features_retention_days >= 30
    error_message = "features_retention_days must be at least 30, so that a month of training windows stays available."
  }
}

variable "incoming_retention_days" {
  type        = number
  description = "Days after which partitions dropped under incoming/ (the prefix that notifies the scoring queue) expire."
  default     = 14

  validation {
    condition     = var.incoming_retention_days >= 2
    error_message = "incoming_retention_days must be at least 2, so that a partition outlives the message that names it."
  }
}

variable "predictions_retention_days" {
  type        = number
  description = "Days after which prediction outputs (predictions/) expire. They move to Standard-IA after 30 days."
  default     = 90

  validation {
    condition     = var.predictions_retention_days >= 31
    error_message = "predictions_retention_days must be greater than 30, the age at which predictions move to Standard-IA (which bills 30 days at least)."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days that the versioned buckets (raw logs, models, MLflow artifacts) keep a version after it was overwritten or deleted."
  default     = 90

  validation {
    condition     = var.noncurrent_version_retention_days >= 7
    error_message = "noncurrent_version_retention_days must be at least 7."
  }
}

variable "access_log_retention_days" {
  type        = number
  description = "Days after which S3 server access logs expire."
  default     = 365
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
