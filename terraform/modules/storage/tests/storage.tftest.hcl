# Offline tests with a mocked AWS provider: `terraform test` in this folder.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  name = "ctr-test"
}

run "every_bucket_private_and_encrypted" {
  command = plan

  assert {
    condition     = length(aws_s3_bucket.data) == 5
    error_message = "Expected the five data buckets: raw-logs, features, predictions, models, mlflow-artifacts."
  }

  assert {
    condition     = alltrue([for purpose, bucket in aws_s3_bucket.data : contains(keys(aws_s3_bucket_server_side_encryption_configuration.data), purpose)])
    error_message = "Every data bucket needs a default encryption configuration."
  }

  assert {
    condition     = alltrue([for config in aws_s3_bucket_server_side_encryption_configuration.data : one(config.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms"])
    error_message = "Data buckets must be encrypted with SSE-KMS."
  }

  assert {
    condition = alltrue([for block in aws_s3_bucket_public_access_block.data :
    block.block_public_acls && block.block_public_policy && block.ignore_public_acls && block.restrict_public_buckets])
    error_message = "Every data bucket must block all public access."
  }

  assert {
    condition     = aws_s3_bucket_public_access_block.access_logs.restrict_public_buckets && one(aws_s3_bucket_server_side_encryption_configuration.access_logs.rule).apply_server_side_encryption_by_default[0].sse_algorithm == "AES256"
    error_message = "The access log bucket must block public access and use SSE-S3, the only encryption that log delivery supports."
  }
}

run "versioning_where_data_cannot_be_recomputed" {
  command = plan

  assert {
    condition     = toset(keys(aws_s3_bucket_versioning.data)) == toset(["raw-logs", "models", "mlflow-artifacts"])
    error_message = "Raw logs, models and MLflow artifacts must be versioned, and only they."
  }
}

run "predictions_expire" {
  command = plan

  assert {
    condition = anytrue([for rule in aws_s3_bucket_lifecycle_configuration.data["predictions"].rule :
    try(rule.filter[0].prefix, "") == "predictions/" && try(rule.expiration[0].days, 0) == var.predictions_retention_days])
    error_message = "Predictions must expire after predictions_retention_days."
  }

  assert {
    condition = alltrue([for rule in aws_s3_bucket_lifecycle_configuration.data["models"].rule :
    length(rule.expiration) == 0])
    error_message = "Current model bundles must never expire: a GitOps revert may need any of them."
  }
}

run "bucket_names_fit_s3_limit" {
  command = plan

  variables {
    name = "a-thirty-character-prefix-0123"
  }

  assert {
    condition     = alltrue([for bucket in aws_s3_bucket.data : length(bucket.bucket) <= 63])
    error_message = "Bucket names must be 63 characters or fewer."
  }
}

run "rejects_short_prediction_retention" {
  command = plan

  variables {
    predictions_retention_days = 30
  }

  expect_failures = [var.predictions_retention_days]
}
