output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "CIDR of the VPC (the chart's networkPolicy.egressCIDRs and ingress.allowFromCIDRs)."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets, one per AZ: nodes and datastores."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets, one per AZ: internet-facing load balancers and NAT."
  value       = aws_subnet.public[*].id
}
