variable "name" {
  type        = string
  description = "Name of the scoring queue, for example ctr-staging-scoring. The dead-letter queue gets the suffix -dlq."

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,76}$", var.name))
    error_message = "name must be 1 to 76 letters, digits, hyphens or underscores, so that the -dlq suffix still fits the 80-character limit of SQS."
  }
}

variable "worker_heartbeat_seconds" {
  type        = number
  description = "HEARTBEAT_SECONDS of the inference workers (GitOps ConfigMap ctr-worker): how often a worker extends the visibility timeout of the message it is scoring."
  default     = 30

  validation {
    condition     = var.worker_heartbeat_seconds >= 1
    error_message = "worker_heartbeat_seconds must be at least 1."
  }
}

variable "visibility_timeout_seconds" {
  type        = number
  description = "Default visibility timeout of the scoring queue, in seconds. It must be at least three heartbeats, so that a message stays hidden through two missed visibility extensions."
  default     = 300

  validation {
    condition     = var.visibility_timeout_seconds >= 3 * var.worker_heartbeat_seconds && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be at least 3 * worker_heartbeat_seconds and at most 43200 (the SQS maximum)."
  }
}

variable "max_receive_count" {
  type        = number
  description = "Receives after which SQS moves a message to the dead-letter queue. A worker that releases its message on shutdown also uses up a receive, so keep it at 5 or more."
  default     = 5

  validation {
    condition     = var.max_receive_count >= 5 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 5 and 1000: releases on shutdown count as receives."
  }
}

variable "message_retention_seconds" {
  type        = number
  description = "Seconds that the scoring queue keeps a message that nobody deletes."
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 3600 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be between 3600 (the scoring deadline) and 1209600 (the SQS maximum)."
  }
}

variable "dead_letter_retention_seconds" {
  type        = number
  description = "Seconds that the dead-letter queue keeps a message. SQS keeps a message's original enqueue time when it moves it, so this must exceed message_retention_seconds."
  default     = 1209600

  validation {
    condition     = var.dead_letter_retention_seconds > var.message_retention_seconds && var.dead_letter_retention_seconds <= 1209600
    error_message = "dead_letter_retention_seconds must be greater than message_retention_seconds and at most 1209600."
  }
}

variable "features_bucket_name" {
  type        = string
  description = "Name of the feature bucket, whose incoming/ prefix sends S3 event notifications to the scoring queue."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
