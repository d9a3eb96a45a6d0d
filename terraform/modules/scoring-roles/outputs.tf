output "worker_role_arn" {
  description = "ARN of the worker role: the eks.amazonaws.com/role-arn annotation of the worker service account."
  value       = aws_iam_role.worker.arn
}

output "worker_role_name" {
  description = "Name of the worker role."
  value       = aws_iam_role.worker.name
}

output "dispatch_role_arn" {
  description = "ARN of the dispatcher role: the eks.amazonaws.com/role-arn annotation of the dispatcher service account."
  value       = aws_iam_role.dispatch.arn
}

output "dispatch_role_name" {
  description = "Name of the dispatcher role."
  value       = aws_iam_role.dispatch.name
}

output "worker_service_account" {
  description = "The <namespace>/<name> of the service account that may assume the worker role."
  value       = "${var.namespace}/${var.worker_service_account}"
}

output "dispatch_service_account" {
  description = "The <namespace>/<name> of the service account that may assume the dispatcher role."
  value       = "${var.namespace}/${var.dispatch_service_account}"
}

output "predictions_prefix" {
  description = "Key prefix of this stack's predictions: PREDICTIONS_PREFIX of its ConfigMap."
  value       = var.predictions_prefix
}
