variable "zone_id" {
  description = "Route 53 public hosted zone of the platform domain."
  type        = string
}

variable "domain" {
  description = "Platform domain, e.g. aether.example: the API is api.<domain>."
  type        = string
  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain must be a lower-case DNS name."
  }
}

variable "region_name" {
  description = "Short region name (us, eu, asia): the record set identifier and api.<region>.<domain>."
  type        = string
  validation {
    condition     = contains(["us", "eu", "asia"], var.region_name)
    error_message = "region_name must be us, eu or asia."
  }
}

variable "aws_region" {
  description = "AWS region of the load balancer (latency routing key)."
  type        = string
}

variable "role" {
  description = "primary or secondary: the failover record of the global write endpoint (write.<domain>) points at the primary while healthy."
  type        = string
  validation {
    condition     = contains(["primary", "secondary"], var.role)
    error_message = "role must be primary or secondary."
  }
}

variable "write_failover_target" {
  description = "For a secondary: be the SECONDARY record of write.<domain> (one secondary is the designated failover target)."
  type        = bool
  default     = false
}

variable "lb_dns_name" {
  description = "DNS name of the region's ingress load balancer (created by the AWS Load Balancer Controller on the first deploy; empty skips the records)."
  type        = string
  default     = ""
}

variable "lb_zone_id" {
  description = "Hosted zone id of that load balancer."
  type        = string
  default     = ""
}

variable "health_check_path" {
  description = "Path Route 53 health checks probe over HTTPS on api.<region>.<domain>."
  type        = string
  default     = "/health"
  validation {
    condition     = startswith(var.health_check_path, "/")
    error_message = "health_check_path must start with /."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
