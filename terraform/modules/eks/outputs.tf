output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the EKS cluster."
  value       = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64-encoded CA certificate of the Kubernetes API server, for kubeconfig files."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "kubernetes_version" {
  description = "Kubernetes minor version of the control plane."
  value       = aws_eks_cluster.this.version
}

output "cluster_security_group_id" {
  description = "ID of the security group that EKS created for the control plane and the nodes; tagged for Karpenter discovery."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider, the federated principal of IRSA trust policies."
  value       = aws_iam_openid_connect_provider.cluster.arn
}

output "oidc_issuer" {
  description = "OIDC issuer of the cluster without the https:// scheme: the prefix of the :sub and :aud condition keys in IRSA trust policies."
  value       = local.oidc_issuer
}

output "karpenter_controller_role_arn" {
  description = "ARN of the IAM role for the Karpenter controller's service account (eks.amazonaws.com/role-arn annotation)."
  value       = aws_iam_role.karpenter_controller.arn
}

output "karpenter_node_role_name" {
  description = "Name of the IAM role of Karpenter's nodes: the role field of every EC2NodeClass."
  value       = aws_iam_role.karpenter_node.name
}

output "karpenter_node_role_arn" {
  description = "ARN of the IAM role of Karpenter's nodes."
  value       = aws_iam_role.karpenter_node.arn
}

output "karpenter_interruption_queue_name" {
  description = "Name of the SQS queue with interruption events: Karpenter's settings.interruptionQueue."
  value       = aws_sqs_queue.karpenter_interruption.name
}

output "karpenter_discovery_tag" {
  description = "Value of the karpenter.sh/discovery tag on the node subnets and the cluster security group, for the EC2NodeClass selector terms."
  value       = var.cluster_name
}
