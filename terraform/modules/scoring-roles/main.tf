# IAM roles of one scoring stack: the inference worker Deployment that consumes
# one queue, and the dispatcher CronJob that fills it. The platform creates one
# stack for the main Deployment and, when enabled, one for the side-by-side
# S3-source comparison. Each stack reads and writes only under its own
# predictions prefix, so the two never touch each other's outputs.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  worker_subject   = "system:serviceaccount:${var.namespace}:${var.worker_service_account}"
  dispatch_subject = "system:serviceaccount:${var.namespace}:${var.dispatch_service_account}"
  keda_subject     = "system:serviceaccount:${var.keda_namespace}:${var.keda_service_account}"
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
      identifiers = [var.keda_role_arn]
    }
  }
}

resource "aws_iam_role" "worker" {
  name               = var.worker_role_name
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
    resources = ["${var.predictions_bucket_arn}/${var.predictions_prefix}*"]
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

# Dispatcher -------------------------------------------------------------------------------

data "aws_iam_policy_document" "dispatch_assume" {
  statement {
    sid     = "DispatchServiceAccount"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = [local.dispatch_subject]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "dispatch" {
  name               = var.dispatch_role_name
  assume_role_policy = data.aws_iam_policy_document.dispatch_assume.json

  tags = var.tags
}

# The dispatcher lists a date's feature partitions, lists the run's existing
# outputs to skip partitions already scored, and sends one message per
# partition. It never receives or deletes messages: that is the worker's job.
data "aws_iam_policy_document" "dispatch" {
  statement {
    sid       = "SendScoreRequests"
    actions   = ["sqs:SendMessage"]
    resources = [var.queue_arn]
  }

  # SQS encrypts each message with a data key from the queue's KMS key.
  statement {
    sid       = "EncryptScoreRequests"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.queue_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "ListFeaturePartitions"
    actions   = ["s3:ListBucket"]
    resources = [var.features_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["features/*"]
    }
  }

  statement {
    sid       = "ReadFeaturePartitions"
    actions   = ["s3:GetObject"]
    resources = ["${var.features_bucket_arn}/features/*"]
  }

  statement {
    sid       = "ListRunFiles"
    actions   = ["s3:ListBucket"]
    resources = [var.predictions_bucket_arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.predictions_prefix}*"]
    }
  }

  # The run manifest and the _SUCCESS marker live beside the outputs.
  statement {
    sid       = "ReadWriteRunFiles"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.predictions_bucket_arn}/${var.predictions_prefix}*"]
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

resource "aws_iam_role_policy" "dispatch" {
  name   = "dispatch-partitions"
  role   = aws_iam_role.dispatch.id
  policy = data.aws_iam_policy_document.dispatch.json
}
