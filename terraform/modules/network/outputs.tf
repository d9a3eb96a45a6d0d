output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR block of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "IDs of the private subnets for nodes and pods, one per availability zone. They carry the karpenter.sh/discovery tag."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "IDs of the public subnets, which hold the NAT gateways and internet-facing load balancers."
  value       = aws_subnet.public[*].id
}

output "nat_public_ips" {
  description = "Public IP addresses of the NAT gateways: the source addresses of the cluster's traffic to the internet."
  value       = aws_eip.nat[*].public_ip
}

output "s3_endpoint_id" {
  description = "ID of the S3 gateway endpoint. Bucket policies can pin access to it with the aws:SourceVpce condition."
  value       = aws_vpc_endpoint.s3.id
}

output "interface_endpoint_ids" {
  description = "IDs of the interface VPC endpoints, by service name (sqs, ecr.api, ecr.dkr, sts)."
  value       = { for service, endpoint in aws_vpc_endpoint.interface : service => endpoint.id }
}
