# Global load balancing with Route 53:
# - api.<region>.<domain>: the region's load balancer (direct, for tests and pinning);
# - api.<domain>: latency-based records, one per region, each tied to the region's health
#   check, so users reach the nearest healthy region and a failed region drops out;
# - write.<domain>: failover records, PRIMARY on the primary region and SECONDARY elsewhere,
#   for clients that must reach the global write path.
locals {
  enabled = var.lb_dns_name != ""
}

resource "aws_route53_health_check" "this" {
  count             = local.enabled ? 1 : 0
  fqdn              = "api.${var.region_name}.${var.domain}"
  port              = 443
  type              = "HTTPS"
  resource_path     = var.health_check_path
  failure_threshold = 3
  request_interval  = 10
  measure_latency   = true
  tags              = merge(var.tags, { Name = "aether-api-${var.region_name}" })
}

resource "aws_route53_record" "regional" {
  count   = local.enabled ? 1 : 0
  zone_id = var.zone_id
  name    = "api.${var.region_name}.${var.domain}"
  type    = "A"
  alias {
    name                   = var.lb_dns_name
    zone_id                = var.lb_zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "latency" {
  count           = local.enabled ? 1 : 0
  zone_id         = var.zone_id
  name            = "api.${var.domain}"
  type            = "A"
  set_identifier  = var.region_name
  health_check_id = aws_route53_health_check.this[0].id
  latency_routing_policy {
    region = var.aws_region
  }
  alias {
    name                   = var.lb_dns_name
    zone_id                = var.lb_zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "write" {
  count           = local.enabled && (var.role == "primary" || var.write_failover_target) ? 1 : 0
  zone_id         = var.zone_id
  name            = "write.${var.domain}"
  type            = "A"
  set_identifier  = "${var.region_name}-${var.role}"
  health_check_id = aws_route53_health_check.this[0].id
  failover_routing_policy {
    type = var.role == "primary" ? "PRIMARY" : "SECONDARY"
  }
  alias {
    name                   = var.lb_dns_name
    zone_id                = var.lb_zone_id
    evaluate_target_health = true
  }
}
