variable "repository_name" {
  type        = string
  description = "Name of the ECR repository of the inference images, for example ctr/inference. Tags follow <model>-v<version>-<git short sha>."

  validation {
    condition     = can(regex("^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$", var.repository_name))
    error_message = "repository_name must be a valid ECR repository name: lowercase letters, digits, and . _ - / between them."
  }
}

variable "promoted_tag_prefix" {
  type        = string
  description = "Prefix of the extra tag that the pipeline adds to an image when it promotes it to an environment (promoted-<image tag>). Images with such a tag are kept by count, never by age."
  default     = "promoted-"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*-$", var.promoted_tag_prefix))
    error_message = "promoted_tag_prefix must be lowercase letters, digits and hyphens, ending with a hyphen."
  }
}

variable "keep_promoted_images" {
  type        = number
  description = "Number of most recently pushed promoted images that the lifecycle policy keeps. It bounds how far back a GitOps revert can roll back, so keep it above the number of promotions in the rollback window (weekly retraining gives about 52 a year)."
  default     = 100

  validation {
    condition     = var.keep_promoted_images >= 20
    error_message = "keep_promoted_images must be at least 20, so that reverting a few GitOps commits never points at an expired image."
  }
}

variable "unpromoted_image_retention_days" {
  type        = number
  description = "Days after which images that were never promoted (candidate builds) expire."
  default     = 30

  validation {
    condition     = var.unpromoted_image_retention_days >= 7
    error_message = "unpromoted_image_retention_days must be at least 7, so that a candidate survives the approval step of the pipeline."
  }
}

variable "untagged_image_retention_days" {
  type        = number
  description = "Days after which untagged images (from interrupted pushes) expire."
  default     = 7

  validation {
    condition     = var.untagged_image_retention_days >= 1
    error_message = "untagged_image_retention_days must be at least 1."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of the module."
  default     = {}
}
