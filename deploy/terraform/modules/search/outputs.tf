output "endpoint" {
  description = "HTTPS endpoint (AETHER_ELASTICSEARCH_URL, in the components' secrets)."
  value       = "https://${aws_opensearch_domain.this.endpoint}"
}

output "domain_arn" {
  description = "Domain ARN (IAM policies of the components' roles)."
  value       = aws_opensearch_domain.this.arn
}
