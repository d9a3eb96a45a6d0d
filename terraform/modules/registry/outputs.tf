output "repository_url" {
  description = "URL of the repository (<account>.dkr.ecr.<region>.amazonaws.com/<name>): the image name in the GitOps overlays."
  value       = aws_ecr_repository.inference.repository_url
}

output "repository_arn" {
  description = "ARN of the repository, for the push permissions of the CI role."
  value       = aws_ecr_repository.inference.arn
}

output "repository_name" {
  description = "Name of the repository."
  value       = aws_ecr_repository.inference.name
}

output "registry_id" {
  description = "Account ID of the registry, for `aws ecr get-login-password` and docker login."
  value       = aws_ecr_repository.inference.registry_id
}

output "promoted_tag_prefix" {
  description = "Prefix of the tag that the pipeline adds to an image on promotion, so that the lifecycle policy keeps it."
  value       = var.promoted_tag_prefix
}
