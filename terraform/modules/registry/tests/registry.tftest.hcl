# Offline tests with a mocked AWS provider: `terraform test` in this folder.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  repository_name = "ctr/inference"
}

run "immutable_scanned_encrypted" {
  command = plan

  assert {
    condition     = aws_ecr_repository.inference.image_tag_mutability == "IMMUTABLE"
    error_message = "Tags must be immutable, so that a tag in a GitOps overlay always names the same digest."
  }

  assert {
    condition     = aws_ecr_repository.inference.image_scanning_configuration[0].scan_on_push
    error_message = "Images must be scanned on push."
  }

  assert {
    condition     = aws_ecr_repository.inference.encryption_configuration[0].encryption_type == "KMS"
    error_message = "Image layers must be encrypted with the module's KMS key."
  }
}

run "lifecycle_keeps_promoted_images_first" {
  command = plan

  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.inference.policy).rules[0].selection.tagPrefixList == [var.promoted_tag_prefix]
    error_message = "The first rule must select promoted images, so that no later rule can expire them."
  }

  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.inference.policy).rules[0].selection.countType == "imageCountMoreThan"
    error_message = "Promoted images must expire by count only, never by age."
  }

  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.inference.policy).rules[0].selection.countNumber == var.keep_promoted_images
    error_message = "The promoted rule must keep keep_promoted_images images."
  }

  assert {
    condition     = alltrue([for rule in jsondecode(aws_ecr_lifecycle_policy.inference.policy).rules : rule.rulePriority > 1 if rule.selection.tagStatus == "any"])
    error_message = "A rule that selects any image must come after the promoted rule."
  }
}

run "rejects_small_promoted_history" {
  command = plan

  variables {
    keep_promoted_images = 5
  }

  expect_failures = [var.keep_promoted_images]
}
