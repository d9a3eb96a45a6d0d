# ECR repository of the inference images (one image per model version, with
# the bundle baked in). Tags are immutable, so a tag in a GitOps overlay always
# names the same digest; images are scanned on push; the lifecycle policy
# keeps every image that an overlay or a revert of one can still reference.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# ECR uses the key through a grant that it creates with the permissions of
# whoever creates the repository; pushers and pullers need no key permissions.
data "aws_iam_policy_document" "registry_key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account root statement hands access control to IAM policies.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; the account root statement hands access control to IAM policies.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only.
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "registry" {
  description             = "${var.repository_name}: ECR image layers"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.registry_key.json

  tags = var.tags
}

resource "aws_ecr_repository" "inference" {
  name                 = var.repository_name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.registry.arn
  }

  tags = var.tags
}

locals {
  # ECR evaluates rules by ascending priority, and an image that matches the
  # tag selection of a rule is never expired by a rule of lower priority. So
  # rule 1 shelters every promoted image (and expires only those beyond the
  # newest keep_promoted_images); rule 3 can then expire old candidate builds
  # without touching anything an overlay has pinned.
  lifecycle_rules = [
    {
      rulePriority = 1
      description  = "Keep the newest promoted images; an overlay or a revert may reference any of them"
      selection = {
        tagStatus     = "tagged"
        tagPrefixList = [var.promoted_tag_prefix]
        countType     = "imageCountMoreThan"
        countNumber   = var.keep_promoted_images
      }
      action = { type = "expire" }
    },
    {
      rulePriority = 2
      description  = "Expire untagged images left by interrupted pushes"
      selection = {
        tagStatus   = "untagged"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = var.untagged_image_retention_days
      }
      action = { type = "expire" }
    },
    {
      rulePriority = 3
      description  = "Expire candidate images that were never promoted"
      selection = {
        tagStatus   = "any"
        countType   = "sinceImagePushed"
        countUnit   = "days"
        countNumber = var.unpromoted_image_retention_days
      }
      action = { type = "expire" }
    },
  ]
}

resource "aws_ecr_lifecycle_policy" "inference" {
  repository = aws_ecr_repository.inference.name
  policy     = jsonencode({ rules = local.lifecycle_rules })
}
