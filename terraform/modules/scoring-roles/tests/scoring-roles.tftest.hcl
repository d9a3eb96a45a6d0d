# Offline tests with a mocked AWS provider: `terraform test` in this folder.
# The policy documents themselves are checked by tests/terraform in Python,
# because the mocked provider does not render them.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  worker_role_name         = "ctr-test-worker-s3"
  dispatch_role_name       = "ctr-test-dispatch-s3"
  worker_service_account   = "ctr-worker-s3"
  dispatch_service_account = "ctr-dispatch-s3"
  keda_role_arn            = "arn:aws:iam::123456789012:role/ctr-test-keda-operator"
  oidc_provider_arn        = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
  oidc_issuer              = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
  queue_arn                = "arn:aws:sqs:us-east-1:123456789012:ctr-test-scoring-s3"
  queue_kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000001"
  features_bucket_arn      = "arn:aws:s3:::ctr-test-features-123456789012"
  predictions_bucket_arn   = "arn:aws:s3:::ctr-test-predictions-123456789012"
  predictions_prefix       = "comparisons/s3-source/predictions/"
  models_bucket_arn        = "arn:aws:s3:::ctr-test-models-123456789012"
  data_kms_key_arn         = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000002"
}

run "names_roles_and_service_accounts" {
  command = plan

  assert {
    condition     = aws_iam_role.worker.name == "ctr-test-worker-s3" && aws_iam_role.dispatch.name == "ctr-test-dispatch-s3"
    error_message = "The roles must carry the names the GitOps annotations use."
  }

  assert {
    condition     = output.worker_service_account == "ctr/ctr-worker-s3" && output.dispatch_service_account == "ctr/ctr-dispatch-s3"
    error_message = "The roles must trust the service accounts in namespace ctr."
  }
}

run "rejects_empty_predictions_prefix" {
  command = plan

  variables {
    predictions_prefix = ""
  }

  expect_failures = [var.predictions_prefix]
}

run "rejects_wildcard_predictions_prefix" {
  command = plan

  variables {
    predictions_prefix = "comparisons/*/"
  }

  expect_failures = [var.predictions_prefix]
}

run "rejects_prefix_without_trailing_slash" {
  command = plan

  variables {
    predictions_prefix = "predictions"
  }

  expect_failures = [var.predictions_prefix]
}
