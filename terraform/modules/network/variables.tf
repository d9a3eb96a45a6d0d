variable "name" {
  type        = string
  description = "Prefix of every resource name, for example ctr-staging."
}

variable "cidr_block" {
  type        = string
  description = "IPv4 CIDR block of the VPC. The node subnets take one /19 per availability zone, so use a /16."

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 16
    error_message = "cidr_block must be a valid IPv4 CIDR block of size /16 or larger."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zones to spread the subnets over, for example [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\"]. At least two, as EKS requires."

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6
    error_message = "availability_zones must list between two and six zones."
  }
}

variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster that runs in this VPC. The private subnets carry it in the karpenter.sh/discovery tag, which Karpenter's EC2NodeClass selects on."
}

variable "single_nat_gateway" {
  type        = bool
  description = "Create one NAT gateway for all zones (cheaper, but a zone outage cuts egress) instead of one per zone."
}

variable "interface_endpoint_services" {
  type        = list(string)
  description = "AWS services reached through interface VPC endpoints instead of the NAT gateway. The S3 gateway endpoint is always created."
  default     = ["sqs", "ecr.api", "ecr.dkr", "sts"]

  validation {
    condition     = alltrue([for service in ["sqs", "ecr.api", "ecr.dkr"] : contains(var.interface_endpoint_services, service)])
    error_message = "interface_endpoint_services must contain sqs, ecr.api and ecr.dkr, so that scoring traffic and image pulls stay off the NAT gateway."
  }
}

variable "flow_log_retention_days" {
  type        = number
  description = "Days that CloudWatch Logs keeps the VPC flow logs."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one of the retention periods that CloudWatch Logs accepts, for example 90 or 365."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
