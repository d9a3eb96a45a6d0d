variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster; also the prefix of the Karpenter resources."

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must start with a letter and contain only letters, digits and hyphens (at most 100 characters)."
  }
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane and the system node group, for example 1.32. Upgrade one minor version at a time."

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version such as 1.32, without a patch number."
  }
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets for the control plane's network interfaces and the system node group, in at least two availability zones."

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must list subnets in at least two availability zones."
  }
}

variable "endpoint_public_access_cidrs" {
  type        = list(string)
  description = "CIDR blocks allowed to reach the public Kubernetes API endpoint, for example the CircleCI IP ranges and the office VPN. An empty list disables the public endpoint, and then CI must run inside the VPC."

  validation {
    condition     = !contains(var.endpoint_public_access_cidrs, "0.0.0.0/0")
    error_message = "endpoint_public_access_cidrs must not contain 0.0.0.0/0: list the CI and operator ranges instead."
  }
}

variable "access_entries" {
  type = map(object({
    principal_arn = string
    policy_name   = string
    namespaces    = optional(list(string), [])
  }))
  description = "EKS access entries for people and automation, by a short key. policy_name is an EKS access policy such as AmazonEKSClusterAdminPolicy or AmazonEKSViewPolicy; an empty namespaces list grants it cluster-wide."
  default     = {}
}

variable "system_node_instance_types" {
  type        = list(string)
  description = "Instance types of the managed node group that runs the system pods (Argo CD, KEDA, Karpenter, CoreDNS)."
  default     = ["m7i.large", "m6i.large"]
}

variable "system_node_count" {
  type = object({
    min     = number
    desired = number
    max     = number
  })
  description = "Size of the system node group. Keep min at 2 or more, so that Karpenter and CoreDNS survive the loss of one node."
  default     = { min = 2, desired = 2, max = 3 }

  validation {
    condition     = var.system_node_count.min >= 2 && var.system_node_count.min <= var.system_node_count.desired && var.system_node_count.desired <= var.system_node_count.max
    error_message = "system_node_count needs 2 <= min <= desired <= max."
  }
}

variable "system_node_disk_gib" {
  type        = number
  description = "Root volume size of the system nodes, in GiB."
  default     = 50
}

variable "system_node_taint" {
  type        = bool
  description = "Taint the system nodes with CriticalAddonsOnly=true:NoSchedule, so that only pods that tolerate it (the add-ons installed by GitOps must) run there."
  default     = false
}

variable "addon_versions" {
  type        = map(string)
  description = "Pinned versions of the EKS managed add-ons vpc-cni, kube-proxy and coredns, by add-on name. An add-on missing from the map gets the default version for the cluster's Kubernetes version."
  default     = {}
}

variable "cluster_log_retention_days" {
  type        = number
  description = "Days that CloudWatch Logs keeps the control plane logs (API server, audit, authenticator, controller manager, scheduler)."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.cluster_log_retention_days)
    error_message = "cluster_log_retention_days must be one of the retention periods that CloudWatch Logs accepts, for example 90 or 365."
  }
}

variable "karpenter_namespace" {
  type        = string
  description = "Namespace of the Karpenter controller's service account."
  default     = "kube-system"
}

variable "karpenter_service_account" {
  type        = string
  description = "Name of the Karpenter controller's service account."
  default     = "karpenter"
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
