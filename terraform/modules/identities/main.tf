# IAM roles of the platform's singletons: KEDA's operator (which with
# identityOwner: workload scales on queue depth with each worker's role) and
# CircleCI (OIDC federation, no stored keys). The worker and dispatcher roles
# of each scoring stack are in the scoring-roles module; Karpenter's roles are
# in the eks module, next to the cluster resources they refer to.

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  keda_subject = "system:serviceaccount:${var.keda_namespace}:${var.keda_service_account}"

  circleci_issuer       = "oidc.circleci.com/org/${var.circleci_org_id}"
  circleci_provider_arn = var.circleci_oidc_provider_arn != null ? var.circleci_oidc_provider_arn : aws_iam_openid_connect_provider.circleci[0].arn
}

# KEDA -------------------------------------------------------------------------------------

data "aws_iam_policy_document" "keda_assume" {
  statement {
    sid     = "KedaOperatorServiceAccount"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = [local.keda_subject]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

# The role gives the KEDA operator pod its web identity token. It can do one
# thing with it: assume the worker roles.
resource "aws_iam_role" "keda" {
  name               = "${var.name}-keda-operator"
  assume_role_policy = data.aws_iam_policy_document.keda_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "keda" {
  statement {
    sid       = "AssumeWorkerRoles"
    actions   = ["sts:AssumeRole"]
    resources = var.worker_role_arns
  }
}

resource "aws_iam_role_policy" "keda" {
  name   = "assume-worker-roles"
  role   = aws_iam_role.keda.id
  policy = data.aws_iam_policy_document.keda.json
}

# CircleCI -------------------------------------------------------------------------------

resource "aws_iam_openid_connect_provider" "circleci" {
  count = var.circleci_oidc_provider_arn == null ? 1 : 0

  url            = "https://${local.circleci_issuer}"
  client_id_list = [var.circleci_org_id]

  tags = var.tags
}

data "aws_iam_policy_document" "ci_assume" {
  statement {
    sid     = "CircleCiProjects"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.circleci_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.circleci_issuer}:aud"
      values   = [var.circleci_org_id]
    }

    # CircleCI's subject is org/<org id>/project/<project id>/user/<user id>.
    condition {
      test     = "StringLike"
      variable = "${local.circleci_issuer}:sub"
      values   = [for project in var.circleci_project_ids : "org/${var.circleci_org_id}/project/${project}/user/*"]
    }
  }
}

resource "aws_iam_role" "ci" {
  name                 = "${var.name}-circleci"
  assume_role_policy   = data.aws_iam_policy_document.ci_assume.json
  max_session_duration = 3600

  tags = var.tags
}

data "aws_iam_policy_document" "ci" {
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken supports no resource-level permissions; every other statement names its resources.
  #checkov:skip=CKV_AWS_111:The only statement with Resource "*" is ecr:GetAuthorizationToken, which cannot be scoped; writes are limited to one repository and two bucket prefixes.
  statement {
    sid       = "LogInToEcr"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushInferenceImages"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:ListImages",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [var.repository_arn]
  }

  statement {
    sid       = "ReadWriteModelStore"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.models_bucket_arn}/models/*"]
  }

  statement {
    sid       = "ReadWriteMlflowArtifacts"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.mlflow_artifacts_bucket_arn}/*"]
  }

  # A push retrains the model, so the training job reads feature partitions.
  statement {
    sid       = "ReadFeaturePartitions"
    actions   = ["s3:GetObject"]
    resources = ["${var.features_bucket_arn}/features/*"]
  }

  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = [var.models_bucket_arn, var.mlflow_artifacts_bucket_arn, var.features_bucket_arn]
  }

  statement {
    sid       = "UseDataKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.data_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }

  # For `aws eks update-kubeconfig`; what the role may do inside the cluster
  # is set by its access entry below.
  statement {
    sid       = "DescribeCluster"
    actions   = ["eks:DescribeCluster"]
    resources = [var.cluster_arn]
  }
}

resource "aws_iam_role_policy" "ci" {
  name   = "build-and-promote"
  role   = aws_iam_role.ci.id
  policy = data.aws_iam_policy_document.ci.json
}

# Read-only in the namespaces it deploys to, so that the pipeline can wait on
# the rollout; the deployment itself is a git commit that Argo CD applies.
resource "aws_eks_access_entry" "ci" {
  cluster_name  = var.cluster_name
  principal_arn = aws_iam_role.ci.arn
  type          = "STANDARD"

  tags = var.tags
}

resource "aws_eks_access_policy_association" "ci" {
  cluster_name  = var.cluster_name
  principal_arn = aws_iam_role.ci.arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"

  access_scope {
    type       = "namespace"
    namespaces = var.ci_kubernetes_namespaces
  }

  depends_on = [aws_eks_access_entry.ci]
}
