# Offline tests with a mocked AWS provider: `terraform test` in this folder.

mock_provider "aws" {
  source = "../../mocks/aws"
}

variables {
  name                   = "ctr-test"
  queue_name             = "ctr-test-scoring"
  dead_letter_queue_name = "ctr-test-scoring-dlq"
}

run "dead_letter_alarm_fires_on_any_message" {
  command = plan

  assert {
    condition     = aws_cloudwatch_metric_alarm.dead_letter_messages.metric_name == "ApproximateNumberOfMessagesVisible"
    error_message = "The dead-letter alarm must watch the number of visible messages."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.dead_letter_messages.dimensions.QueueName == var.dead_letter_queue_name
    error_message = "The dead-letter alarm must watch the dead-letter queue."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.dead_letter_messages.comparison_operator == "GreaterThanThreshold" && aws_cloudwatch_metric_alarm.dead_letter_messages.threshold == 0
    error_message = "The dead-letter alarm must fire on a single message."
  }
}

run "oldest_message_alarm_before_deadline" {
  command = plan

  assert {
    condition     = aws_cloudwatch_metric_alarm.oldest_message_age.metric_name == "ApproximateAgeOfOldestMessage"
    error_message = "The deadline alarm must watch the age of the oldest message."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.oldest_message_age.dimensions.QueueName == var.queue_name
    error_message = "The deadline alarm must watch the scoring queue."
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.oldest_message_age.threshold < var.deadline_seconds
    error_message = "The deadline alarm must fire before the deadline."
  }
}

run "rejects_threshold_at_deadline" {
  command = plan

  variables {
    oldest_message_alarm_seconds = 3600
  }

  expect_failures = [var.oldest_message_alarm_seconds]
}
