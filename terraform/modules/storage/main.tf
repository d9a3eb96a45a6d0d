# Data buckets of the platform: raw click logs, feature partitions (and the
# incoming/ prefix that notifies the scoring queue), predictions, model bundles
# and MLflow artifacts. All are private, encrypted with one customer managed
# KMS key (with S3 Bucket Keys, so KMS sees one request per object batch, not
# one per object) and reject plain HTTP. A separate bucket receives the S3
# server access logs.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # versioned: keep overwritten and deleted objects. Only data that cannot be
  # recomputed is versioned; features come back from the Spark job, and
  # predictions are rewritten at deterministic keys whenever a message is
  # redelivered, so versions there would only pile up duplicates.
  buckets = {
    raw-logs         = { versioned = true }
    features         = { versioned = false }
    predictions      = { versioned = false }
    models           = { versioned = true }
    mlflow-artifacts = { versioned = true }
  }

  bucket_names = { for purpose, _ in local.buckets : purpose => "${var.name}-${purpose}-${local.account_id}" }

  # Lifecycle rules by bucket. A null field means the rule has no such action.
  # Every bucket also gets abort_uploads_rule, for the whole bucket.
  abort_uploads_rule = {
    id                         = "abort-incomplete-multipart-uploads"
    prefix                     = ""
    transitions                = []
    expiration_days            = null
    noncurrent_expiration_days = null
    abort_upload_days          = 7
  }

  lifecycle_rules = {
    raw-logs = [
      {
        id                         = "tier-and-expire-raw-logs"
        prefix                     = "raw/"
        transitions                = [{ days = 30, storage_class = "STANDARD_IA" }, { days = 90, storage_class = "GLACIER_IR" }]
        expiration_days            = var.raw_logs_retention_days
        noncurrent_expiration_days = var.noncurrent_version_retention_days
        abort_upload_days          = null
      },
    ]
    features = [
      {
        id                         = "expire-features"
        prefix                     = "features/"
        transitions                = []
        expiration_days            = var.features_retention_days
        noncurrent_expiration_days = null
        abort_upload_days          = null
      },
      {
        id                         = "expire-incoming"
        prefix                     = "incoming/"
        transitions                = []
        expiration_days            = var.incoming_retention_days
        noncurrent_expiration_days = null
        abort_upload_days          = null
      },
    ]
    predictions = [
      {
        id                         = "tier-and-expire-predictions"
        prefix                     = "predictions/"
        transitions                = [{ days = 30, storage_class = "STANDARD_IA" }]
        expiration_days            = var.predictions_retention_days
        noncurrent_expiration_days = null
        abort_upload_days          = null
      },
    ]
    # Model bundles and MLflow artifacts never expire: a GitOps revert or an
    # old run may need any of them. Only overwritten versions expire.
    models = [
      {
        id                         = "expire-old-bundle-versions"
        prefix                     = ""
        transitions                = []
        expiration_days            = null
        noncurrent_expiration_days = var.noncurrent_version_retention_days
        abort_upload_days          = null
      },
    ]
    mlflow-artifacts = [
      {
        id                         = "expire-old-artifact-versions"
        prefix                     = ""
        transitions                = []
        expiration_days            = null
        noncurrent_expiration_days = var.noncurrent_version_retention_days
        abort_upload_days          = null
      },
    ]
  }
}

# Encryption key ----------------------------------------------------------------------

data "aws_iam_policy_document" "data_key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account root statement hands access control to IAM policies.
  #checkov:skip=CKV_AWS_111:A key policy's Resource "*" means this key only; the account root statement hands access control to IAM policies.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only.
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "data" {
  description             = "${var.name}: data buckets (raw logs, features, predictions, models, MLflow artifacts)"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.data_key.json

  tags = var.tags
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name}-data"
  target_key_id = aws_kms_key.data.key_id
}

# Data buckets ---------------------------------------------------------------------------

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_21:Versioning is on for raw logs, models and MLflow artifacts (aws_s3_bucket_versioning.data). Features are recomputable and predictions are rewritten at deterministic keys on redelivery, so versions there would only duplicate data.
  #checkov:skip=CKV_AWS_144:The platform runs in one region; cross-region replication of the data buckets is a disaster-recovery decision outside this module.
  #checkov:skip=CKV2_AWS_62:Only the feature bucket sends event notifications (for incoming/, configured by the queue module); the other buckets have no consumer for events.
  for_each = local.buckets

  bucket = local.bucket_names[each.key]

  tags = merge(var.tags, { Purpose = each.key })
}

resource "aws_s3_bucket_ownership_controls" "data" {
  for_each = local.buckets

  bucket = aws_s3_bucket.data[each.key].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each = local.buckets

  bucket                  = aws_s3_bucket.data[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = local.buckets

  bucket = aws_s3_bucket.data[each.key].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "data" {
  for_each = { for purpose, settings in local.buckets : purpose => settings if settings.versioned }

  bucket = aws_s3_bucket.data[each.key].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_logging" "data" {
  for_each = local.buckets

  bucket        = aws_s3_bucket.data[each.key].id
  target_bucket = aws_s3_bucket.access_logs.id
  target_prefix = "${each.key}/"
}

data "aws_iam_policy_document" "data_bucket" {
  for_each = local.buckets

  statement {
    sid       = "DenyUnencryptedTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.data[each.key].arn, "${aws_s3_bucket.data[each.key].arn}/*"]

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

resource "aws_s3_bucket_policy" "data" {
  for_each = local.buckets

  bucket = aws_s3_bucket.data[each.key].id
  policy = data.aws_iam_policy_document.data_bucket[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.data]
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = local.buckets

  bucket = aws_s3_bucket.data[each.key].id

  dynamic "rule" {
    for_each = concat([local.abort_uploads_rule], local.lifecycle_rules[each.key])

    content {
      id     = rule.value.id
      status = "Enabled"

      filter {
        prefix = rule.value.prefix
      }

      dynamic "abort_incomplete_multipart_upload" {
        for_each = rule.value.abort_upload_days == null ? [] : [rule.value.abort_upload_days]

        content {
          days_after_initiation = abort_incomplete_multipart_upload.value
        }
      }

      dynamic "transition" {
        for_each = rule.value.transitions

        content {
          days          = transition.value.days
          storage_class = transition.value.storage_class
        }
      }

      dynamic "expiration" {
        for_each = rule.value.expiration_days == null ? [] : [rule.value.expiration_days]

        content {
          days = expiration.value
        }
      }

      dynamic "noncurrent_version_expiration" {
        for_each = rule.value.noncurrent_expiration_days == null ? [] : [rule.value.noncurrent_expiration_days]

        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }
    }
  }

  # A lifecycle rule on a versioned bucket needs versioning to exist first.
  depends_on = [aws_s3_bucket_versioning.data]
}

# Access log bucket ------------------------------------------------------------------------

resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_145:S3 server access logging delivers only to buckets encrypted with SSE-S3, not SSE-KMS.
  #checkov:skip=CKV_AWS_18:This bucket is the access log destination; logging it into itself would loop.
  #checkov:skip=CKV_AWS_21:Access logs are append-only and expire by lifecycle rule; versions would add nothing.
  #checkov:skip=CKV_AWS_144:Access logs stay in the region of the buckets they describe.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events for access log objects.
  bucket = "${var.name}-access-logs-${local.account_id}"

  tags = merge(var.tags, { Purpose = "access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"

    filter {}

    expiration {
      days = var.access_log_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid       = "S3LogsDeliveryWritesAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [for bucket in aws_s3_bucket.data : bucket.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "DenyUnencryptedTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]

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

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = data.aws_iam_policy_document.access_logs.json

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}
