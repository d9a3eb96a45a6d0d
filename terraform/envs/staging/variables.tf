variable "aws_account_id" {
  type        = string
  description = "ID of the AWS account of this environment; the provider refuses to run against any other account."

  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  type        = string
  description = "AWS region of the environment."
  default     = "us-east-1"
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones of the subnets, in the region above."
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the Kubernetes API: the CircleCI IP ranges (with IP ranges enabled on the deploy jobs) and the operators' VPN."
}

variable "access_entries" {
  type = map(object({
    principal_arn = string
    policy_name   = string
    namespaces    = optional(list(string), [])
  }))
  description = "EKS access entries for operators, for example { admins = { principal_arn = \"arn:aws:iam::123456789012:role/PlatformAdmin\", policy_name = \"AmazonEKSClusterAdminPolicy\" } }."
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
  description = "ARN of an existing IAM OIDC provider for CircleCI in this account, when one exists already; null creates it."
  default     = null
}

variable "alarm_email_addresses" {
  type        = list(string)
  description = "Email addresses that receive the scoring alarms."
  default     = []
}
