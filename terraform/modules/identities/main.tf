# IAM roles of the workloads: the inference worker (IRSA), KEDA (which with
# identityOwner: workload scales on queue depth with the worker's role), and
# CircleCI (OIDC federation, no stored keys). Karpenter's roles are in the eks
# module, next to the cluster resources they refer to.

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name

  worker_subject = "system:serviceaccount:${var.worker_namespace}:${var.worker_service_account}"
  keda_subject   = "system:serviceaccount:${var.keda_namespace}:${var.keda_service_account}"

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
# thing with it: assume the worker role.
resource "aws_iam_role" "keda" {
  name               = "${var.name}-keda-operator"
  assume_role_policy = data.aws_iam_policy_document.keda_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "keda" {
  statement {
    sid       = "AssumeWorkerRole"
    actions   = ["sts:AssumeRole"]
    resources = [aws_iam_role.worker.arn]
  }
}

resource "aws_iam_role_policy" "keda" {
  name   = "assume-worker-role"
  role   = aws_iam_role.keda.id
  policy = data.aws_iam_policy_document.keda.json
}

# Worker -----------------------------------------------------------------------------------

# KEDA's aws pod identity provider (KEDA 2.13 and later) first calls
# AssumeRoleWithWebIdentity on the workload's role with its own token and falls
# back to AssumeRole with its own role. Both paths are open to the KEDA
# operator and to nobody else.
data "aws_iam_policy_document" "worker_assume" {
  statement {
    sid     = "WorkerServiceAccount"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = [local.worker_subject]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }

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

  statement {
    sid     = "KedaOperatorRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.keda.arn]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = "${var.name}-worker"
  assume_role_policy = data.aws_iam_policy_document.worker_assume.json

  tags = var.tags
}

data "aws_iam_policy_document" "worker" {
  # GetQueueAttributes is what KEDA's aws-sqs-queue scaler calls with this role.
  statement {
    sid = "ConsumeScoringQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [var.queue_arn]
  }

  statement {
    sid       = "DecryptScoringQueueMessages"
    actions   = ["kms:Decrypt"]
    resources = [var.queue_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid     = "ReadFeaturePartitions"
    actions = ["s3:GetObject"]
    resources = [
      "${var.features_bucket_arn}/features/*",
      "${var.features_bucket_arn}/incoming/*",
    ]
  }

  # Without list permission S3 answers a GET on a missing key with 403, and the
  # worker could not tell a missing partition from a denied one. The bucket
  # holds only partitions, so listing it reveals nothing beyond them.
  statement {
    sid       = "ListFeaturePartitions"
    actions   = ["s3:ListBucket"]
    resources = [var.features_bucket_arn]
  }

  statement {
    sid       = "ReadModelStore"
    actions   = ["s3:GetObject"]
    resources = ["${var.models_bucket_arn}/models/*"]
  }

  # Bundles are downloaded by listing <store>/<name>/<version>/.
  statement {
    sid       = "ListModelStore"
    actions   = ["s3:ListBucket"]
    resources = [var.models_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["models/*"]
    }
  }

  statement {
    sid       = "WritePredictions"
    actions   = ["s3:PutObject"]
    resources = ["${var.predictions_bucket_arn}/predictions/*"]
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
}

resource "aws_iam_role_policy" "worker" {
  name   = "score-partitions"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
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
