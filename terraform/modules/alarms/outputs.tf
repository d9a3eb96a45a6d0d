output "alarm_topic_arn" {
  description = "ARN of the SNS topic that both alarms notify; subscribe chat or paging integrations to it."
  value       = aws_sns_topic.alarms.arn
}

output "dead_letter_alarm_arn" {
  description = "ARN of the alarm on messages in the dead-letter queue."
  value       = aws_cloudwatch_metric_alarm.dead_letter_messages.arn
}

output "oldest_message_alarm_arn" {
  description = "ARN of the alarm on the age of the oldest message in the scoring queue."
  value       = aws_cloudwatch_metric_alarm.oldest_message_age.arn
}
