# Offline tests with a mocked AWS provider: `terraform test` in this folder.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  name                 = "ctr-test-scoring"
  features_bucket_name = "ctr-test-features-123456789012"
}

run "redrive_to_dead_letter_queue" {
  command = apply

  assert {
    condition     = jsondecode(aws_sqs_queue_redrive_policy.scoring.redrive_policy).deadLetterTargetArn == aws_sqs_queue.dead_letter.arn
    error_message = "The scoring queue must redrive to its own dead-letter queue."
  }

  assert {
    condition     = jsondecode(aws_sqs_queue_redrive_policy.scoring.redrive_policy).maxReceiveCount >= 5
    error_message = "maxReceiveCount must be at least 5, because releases on shutdown count as receives."
  }

  assert {
    condition     = jsondecode(aws_sqs_queue_redrive_allow_policy.dead_letter.redrive_allow_policy).sourceQueueArns == [aws_sqs_queue.scoring.arn]
    error_message = "Only the scoring queue may redrive into the dead-letter queue."
  }

  assert {
    condition     = aws_sqs_queue.dead_letter.message_retention_seconds > aws_sqs_queue.scoring.message_retention_seconds
    error_message = "The dead-letter queue must keep messages longer than the scoring queue, since a moved message keeps its enqueue time."
  }
}

run "both_queues_encrypted" {
  command = plan

  assert {
    condition     = aws_sqs_queue.scoring.kms_master_key_id != null && aws_sqs_queue.dead_letter.kms_master_key_id != null
    error_message = "Both queues must use server-side encryption with the module's KMS key."
  }
}

run "visibility_timeout_covers_heartbeats" {
  command = plan

  assert {
    condition     = aws_sqs_queue.scoring.visibility_timeout_seconds >= 3 * var.worker_heartbeat_seconds
    error_message = "The visibility timeout must be at least three worker heartbeats."
  }

  assert {
    condition     = aws_sqs_queue.scoring.receive_wait_time_seconds == 20
    error_message = "The scoring queue must default to long polling."
  }
}

run "notifications_only_for_incoming_parquet" {
  command = plan

  assert {
    condition     = length(aws_s3_bucket_notification.incoming.queue) == 1
    error_message = "The feature bucket must send exactly one kind of notification."
  }

  assert {
    condition     = aws_s3_bucket_notification.incoming.queue[0].filter_prefix == "incoming/"
    error_message = "Only objects under incoming/ may notify the scoring queue."
  }

  assert {
    condition     = aws_s3_bucket_notification.incoming.queue[0].filter_suffix == ".parquet"
    error_message = "Only Parquet partitions may notify the scoring queue."
  }
}

run "rejects_max_receive_count_below_five" {
  command = plan

  variables {
    max_receive_count = 4
  }

  expect_failures = [var.max_receive_count]
}

run "rejects_visibility_timeout_below_three_heartbeats" {
  command = plan

  variables {
    worker_heartbeat_seconds   = 30
    visibility_timeout_seconds = 89
  }

  expect_failures = [var.visibility_timeout_seconds]
}

run "rejects_dead_letter_retention_not_above_queue_retention" {
  command = plan

  variables {
    message_retention_seconds     = 1209600
    dead_letter_retention_seconds = 1209600
  }

  expect_failures = [var.dead_letter_retention_seconds]
}
