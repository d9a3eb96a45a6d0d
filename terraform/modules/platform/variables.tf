variable "environment" {
  type        = string
  description = "Environment name; resources are named ctr-<environment>-*."

  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones of the VPC's subnets, at least two."
}

variable "vpc_cidr_block" {
  type        = string
  description = "IPv4 CIDR block (a /16) of the VPC."
}

variable "single_nat_gateway" {
  type        = bool
  description = "One NAT gateway for all zones instead of one per zone."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the EKS cluster, for example 1.32."
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the public Kubernetes API endpoint (CircleCI and operators); empty disables it."
}

variable "access_entries" {
  type = map(object({
    principal_arn = string
    policy_name   = string
    namespaces    = optional(list(string), [])
  }))
  description = "EKS access entries for people and automation other than CI (the CI role gets its own)."
  default     = {}
}

variable "system_node_count" {
  type = object({
    min     = number
    desired = number
    max     = number
  })
  description = "Size of the system node group."
  default     = { min = 2, desired = 2, max = 3 }
}

variable "system_node_instance_types" {
  type        = list(string)
  description = "Instance types of the system node group."
  default     = ["m7i.large", "m6i.large"]
}

variable "addon_versions" {
  type        = map(string)
  description = "Pinned versions of the EKS managed add-ons (vpc-cni, kube-proxy, coredns); missing ones get the cluster's default."
  default     = {}
}

variable "worker_heartbeat_seconds" {
  type        = number
  description = "HEARTBEAT_SECONDS in the GitOps ConfigMap ctr-worker; the queue's visibility timeout must be at least three of them."
  default     = 30
}

variable "queue_visibility_timeout_seconds" {
  type        = number
  description = "Default visibility timeout of the scoring queue, in seconds."
  default     = 300
}

variable "max_receive_count" {
  type        = number
  description = "Receives after which a scoring message moves to the dead-letter queue (5 or more)."
  default     = 5

  validation {
    condition     = var.max_receive_count >= 5
    error_message = "max_receive_count must be at least 5: releases on shutdown count as receives."
  }
}

variable "predictions_retention_days" {
  type        = number
  description = "Days after which prediction outputs expire."
  default     = 90
}

variable "keep_promoted_images" {
  type        = number
  description = "Number of promoted images that the ECR lifecycle policy keeps."
  default     = 100
}

variable "circleci_org_id" {
  type        = string
  description = "CircleCI organization ID (UUID)."
}

variable "circleci_project_ids" {
  type        = list(string)
  description = "CircleCI project IDs (UUIDs) whose jobs may assume the CI role."
}

variable "circleci_oidc_provider_arn" {
  type        = string
  description = "ARN of an existing IAM OIDC provider for CircleCI in this account; null creates one."
  default     = null
}

variable "alarm_email_addresses" {
  type        = list(string)
  description = "Email addresses that receive the scoring alarms."
  default     = []
}

variable "scoring_deadline_seconds" {
  type        = number
  description = "Time within which a day's partitions must be scored once queued, in seconds."
  default     = 3600
}

variable "oldest_message_alarm_seconds" {
  type        = number
  description = "Age of the oldest scoring message at which the deadline alarm fires, in seconds."
  default     = 2700
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource, on top of the provider's default tags."
  default     = {}
}
