# Offline tests with a mocked AWS provider: `terraform test` in this folder.
# The policy documents themselves are checked by tests/terraform in Python,
# because the mocked provider does not render them.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  name                        = "ctr-test"
  cluster_name                = "ctr-test"
  cluster_arn                 = "arn:aws:eks:us-east-1:123456789012:cluster/ctr-test"
  oidc_provider_arn           = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
  oidc_issuer                 = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"
  queue_arn                   = "arn:aws:sqs:us-east-1:123456789012:ctr-test-scoring"
  queue_kms_key_arn           = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000001"
  features_bucket_arn         = "arn:aws:s3:::ctr-test-features-123456789012"
  predictions_bucket_arn      = "arn:aws:s3:::ctr-test-predictions-123456789012"
  models_bucket_arn           = "arn:aws:s3:::ctr-test-models-123456789012"
  mlflow_artifacts_bucket_arn = "arn:aws:s3:::ctr-test-mlflow-artifacts-123456789012"
  data_kms_key_arn            = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000002"
  repository_arn              = "arn:aws:ecr:us-east-1:123456789012:repository/ctr/inference"
  circleci_org_id             = "00000000-0000-4000-8000-000000000000"
  circleci_project_ids        = ["00000000-0000-4000-8000-000000000001"]
}

run "creates_circleci_provider_when_none_given" {
  command = plan

  assert {
    condition     = length(aws_iam_openid_connect_provider.circleci) == 1
    error_message = "Without circleci_oidc_provider_arn the module must create the provider."
  }

  assert {
    condition     = aws_iam_openid_connect_provider.circleci[0].client_id_list == toset([var.circleci_org_id])
    error_message = "The audience of CircleCI's tokens is the organization ID."
  }
}

run "reuses_existing_circleci_provider" {
  command = plan

  variables {
    circleci_oidc_provider_arn = "arn:aws:iam::123456789012:oidc-provider/oidc.circleci.com/org/00000000-0000-4000-8000-000000000000"
  }

  assert {
    condition     = length(aws_iam_openid_connect_provider.circleci) == 0
    error_message = "An existing provider must be reused, since an account holds one provider per URL."
  }
}

run "ci_reads_only_its_namespaces" {
  command = plan

  assert {
    condition     = endswith(aws_eks_access_policy_association.ci.policy_arn, "/AmazonEKSViewPolicy")
    error_message = "The CI role must get the read-only view policy."
  }

  assert {
    condition     = aws_eks_access_policy_association.ci.access_scope[0].type == "namespace"
    error_message = "The CI role's access must be limited to namespaces."
  }
}

run "rejects_malformed_org_id" {
  command = plan

  variables {
    circleci_org_id = "my-org"
  }

  expect_failures = [var.circleci_org_id]
}
