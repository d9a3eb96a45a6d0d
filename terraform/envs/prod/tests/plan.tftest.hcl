# Plans and applies this environment against a mocked AWS provider, offline:
# catches invalid inputs, for_each over unknown values and broken wiring
# between modules, which `terraform validate` does not evaluate.
# Run `terraform init -backend=false && terraform test` in this folder.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  aws_account_id               = "123456789012"
  endpoint_public_access_cidrs = ["203.0.113.0/24"]
  access_entries = {
    admins = {
      principal_arn = "arn:aws:iam::123456789012:role/PlatformAdmin"
      policy_name   = "AmazonEKSClusterAdminPolicy"
    }
  }
  circleci_org_id      = "00000000-0000-4000-8000-000000000000"
  circleci_project_ids = ["00000000-0000-4000-8000-000000000001"]
}

run "applies_with_mocked_provider" {
  command = apply

  assert {
    condition     = output.worker_config.MODEL_STORE_URI == "s3://${output.bucket_names["models"]}/models"
    error_message = "MODEL_STORE_URI must point at models/ in the models bucket."
  }

  assert {
    condition     = output.worker_config.PREDICTIONS_BUCKET == output.bucket_names["predictions"]
    error_message = "PREDICTIONS_BUCKET must be the predictions bucket."
  }

  assert {
    condition     = output.queue_url != output.dead_letter_queue_url
    error_message = "QUEUE_URL must be the scoring queue, not its dead-letter queue."
  }

  assert {
    condition     = length(output.bucket_names) == 5
    error_message = "Expected five data buckets."
  }
}
