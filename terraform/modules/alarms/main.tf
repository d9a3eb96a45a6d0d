# Alarms on the scoring queue: any message in the dead-letter queue (a
# partition that failed max_receive_count times and will not be scored
# without `ctr redrive`), and a backlog whose oldest message is close to the
# scoring deadline. Both notify an SNS topic.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# CloudWatch can publish to an encrypted topic only with a customer managed key
# whose policy lets it; the AWS managed SNS key does not. The topic policy
# below limits publishing to this account's alarms.
data "aws_iam_policy_document" "alarm_topic_key" {
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

  statement {
    sid       = "CloudWatchPublishesAlarms"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "alarm_topic" {
  description             = "${var.name}: SNS topic of the scoring alarms"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.alarm_topic_key.json

  tags = var.tags
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-scoring-alarms"
  kms_master_key_id = aws_kms_key.alarm_topic.arn

  tags = var.tags
}

data "aws_iam_policy_document" "alarm_topic" {
  statement {
    sid       = "CloudWatchPublishesAlarms"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:cloudwatch:*:${data.aws_caller_identity.current.account_id}:alarm:${var.name}-*"]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarm_topic.json
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_email_addresses)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.key
}

# SQS publishes these metrics once a minute while a queue is active.
resource "aws_cloudwatch_metric_alarm" "dead_letter_messages" {
  alarm_name        = "${var.name}-dead-letter-messages"
  alarm_description = "Messages in ${var.dead_letter_queue_name}: partitions failed ${var.queue_name} too often and will not be scored until `ctr redrive RUN` moves them back."

  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.dead_letter_queue_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0

  # SQS sends no metrics for a queue that has been inactive for about six hours.
  treat_missing_data = "notBreaching"

  alarm_actions = [aws_sns_topic.alarms.arn]
  ok_actions    = [aws_sns_topic.alarms.arn]

  tags = var.tags
}

# The whole day is queued at once, so the oldest message's age is the time
# since dispatch while any partition of the run is left.
# NOTE: SQS leaves a message that was received three times or more out of
# ApproximateAgeOfOldestMessage; such partitions surface through the
# dead-letter alarm once they use up max_receive_count.
resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  alarm_name        = "${var.name}-oldest-message-age"
  alarm_description = "The oldest message in ${var.queue_name} has waited ${var.oldest_message_alarm_seconds} s of the ${var.deadline_seconds} s scoring deadline: add capacity or look for stuck workers."

  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = var.queue_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = var.oldest_message_alarm_seconds
  treat_missing_data  = "notBreaching"

  alarm_actions = [aws_sns_topic.alarms.arn]
  ok_actions    = [aws_sns_topic.alarms.arn]

  tags = var.tags
}
