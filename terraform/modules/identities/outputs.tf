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
