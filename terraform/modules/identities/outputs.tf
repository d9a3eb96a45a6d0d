output "worker_role_arn" {
  description = "ARN of the worker role: the eks.amazonaws.com/role-arn annotation of the worker service account."
  value       = aws_iam_role.worker.arn
}

output "worker_role_name" {
  description = "Name of the worker role."
  value       = aws_iam_role.worker.name
}

output "worker_service_account" {
  description = "The <namespace>/<name> of the service account that may assume the worker role."
  value       = "${var.worker_namespace}/${var.worker_service_account}"
}

output "keda_role_arn" {
  description = "ARN of the KEDA operator role: the eks.amazonaws.com/role-arn annotation of KEDA's service account (Helm value podIdentity.aws.irsa.roleArn)."
  value       = aws_iam_role.keda.arn
}

output "ci_role_arn" {
  description = "ARN of the role that CircleCI jobs assume with their OIDC token (the AWS_ROLE_ARN of the pipeline)."
  value       = aws_iam_role.ci.arn
}

output "circleci_oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider for CircleCI, created here or passed in."
  value       = local.circleci_provider_arn
}
