output "queue_url" {
  description = "URL of the scoring queue: QUEUE_URL of the workers and queueURL of the KEDA aws-sqs-queue trigger."
  value       = aws_sqs_queue.scoring.url
}

output "queue_arn" {
  description = "ARN of the scoring queue."
  value       = aws_sqs_queue.scoring.arn
}

output "queue_name" {
  description = "Name of the scoring queue, the QueueName dimension of its CloudWatch metrics."
  value       = aws_sqs_queue.scoring.name
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue, for `ctr redrive` and for inspection."
  value       = aws_sqs_queue.dead_letter.url
}

output "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dead_letter.arn
}

output "dead_letter_queue_name" {
  description = "Name of the dead-letter queue, the QueueName dimension of its CloudWatch metrics."
  value       = aws_sqs_queue.dead_letter.name
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts both queues. Receivers need kms:Decrypt on it, senders also kms:GenerateDataKey."
  value       = aws_kms_key.queue.arn
}

output "visibility_timeout_seconds" {
  description = "Default visibility timeout of the scoring queue, in seconds."
  value       = aws_sqs_queue.scoring.visibility_timeout_seconds
}

output "max_receive_count" {
  description = "Receives after which a message moves to the dead-letter queue."
  value       = var.max_receive_count
}
