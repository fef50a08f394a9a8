output "api_host" {
  description = "Global API host (latency-routed): the chart's ingress.hosts[0]."
  value       = "api.${var.domain}"
}

output "regional_api_host" {
  description = "This region's API host: the chart's ingress.hosts[1]."
  value       = "api.${var.region_name}.${var.domain}"
}

output "health_check_id" {
  description = "Route 53 health check of this region (empty until lb_dns_name is set)."
  value       = try(aws_route53_health_check.this[0].id, "")
}
