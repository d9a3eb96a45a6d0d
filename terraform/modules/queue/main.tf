# The scoring queue and its dead-letter queue. The dispatcher sends one score
# request per feature partition; the feature bucket sends S3 event
# notifications for partitions that land under incoming/. Workers delete a
# message only after its output is written, so a message that keeps failing
# moves to the dead-letter queue after max_receive_count receives.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  features_bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.features_bucket_name}"

  # The only prefix whose new objects become queue messages; the worker
  # rejects S3 events for any other prefix.
  notification_prefix = "incoming/"
}

# Encryption -------------------------------------------------------------------------

data "aws_iam_policy_document" "queue_key" {
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

  # S3 must encrypt the event notifications it sends to the queue. Which
  # bucket may send at all is up to the queue policy (FeatureBucketSendsNotifications).
  statement {
    sid       = "S3EncryptsNotifications"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "queue" {
  description             = "${var.name}: scoring queue and its dead-letter queue"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.queue_key.json

  tags = var.tags
}

resource "aws_kms_alias" "queue" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.queue.key_id
}

# Queues --------------------------------------------------------------------------------

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.name}-dlq"
  message_retention_seconds = var.dead_letter_retention_seconds
  kms_master_key_id         = aws_kms_key.queue.arn

  # SQS reuses a data key for up to an hour, so KMS sees a few requests an
  # hour instead of one per message.
  kms_data_key_reuse_period_seconds = 3600

  tags = var.tags
}

resource "aws_sqs_queue" "scoring" {
  name = var.name

  # Workers pass their own VISIBILITY_TIMEOUT_SECONDS on every receive and
  # extend it every HEARTBEAT_SECONDS. This default applies to receivers that
  # pass no timeout; the variable's validation keeps it at three heartbeats
  # or more, and 300 s is ten heartbeats of 30 s.
  visibility_timeout_seconds = var.visibility_timeout_seconds

  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = aws_kms_key.queue.arn
  kms_data_key_reuse_period_seconds = 3600

  tags = var.tags
}

resource "aws_sqs_queue_redrive_policy" "scoring" {
  queue_url = aws_sqs_queue.scoring.id
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })
}

# Only the scoring queue may move messages into the dead-letter queue.
resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.scoring.arn]
  })
}

# Queue policies ------------------------------------------------------------------------

data "aws_iam_policy_document" "scoring_queue" {
  statement {
    sid       = "FeatureBucketSendsNotifications"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.scoring.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [local.features_bucket_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }

  statement {
    sid       = "DenyUnencryptedTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.scoring.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "scoring" {
  queue_url = aws_sqs_queue.scoring.id
  policy    = data.aws_iam_policy_document.scoring_queue.json
}

data "aws_iam_policy_document" "dead_letter_queue" {
  statement {
    sid       = "DenyUnencryptedTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.dead_letter.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  policy    = data.aws_iam_policy_document.dead_letter_queue.json
}

# S3 event notifications --------------------------------------------------------------

# S3 checks that it may send to the queue when the notification is saved, so
# the queue policy and the key policy come first. This resource owns the
# feature bucket's whole notification configuration.
resource "aws_s3_bucket_notification" "incoming" {
  bucket = var.features_bucket_name

  queue {
    id            = "incoming-partitions"
    queue_arn     = aws_sqs_queue.scoring.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = local.notification_prefix
    filter_suffix = ".parquet"
  }

  depends_on = [aws_sqs_queue_policy.scoring, aws_kms_key.queue]
}
