variable "environment" {
  description = "Environment: staging or prod."
  type        = string
  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "region_name" {
  description = "Short region name: us, eu or asia (the chart's region.name)."
  type        = string
  validation {
    condition     = contains(["us", "eu", "asia"], var.region_name)
    error_message = "region_name must be us, eu or asia."
  }
}

variable "role" {
  description = "primary (global write path) or secondary (the chart's region.role)."
  type        = string
  validation {
    condition     = contains(["primary", "secondary"], var.role)
    error_message = "role must be primary or secondary."
  }
}

variable "vpc_cidr" {
  description = "VPC CIDR of this region; the three regions' CIDRs must not overlap."
  type        = string
}

variable "peer_vpc_cidrs" {
  description = "Other regions' VPC CIDRs, allowed on Kafka (their MirrorMaker 2 pulls from here over peering)."
  type        = list(string)
  default     = []
}

variable "azs" {
  description = "Three availability zones of the region."
  type        = list(string)
  validation {
    condition     = length(var.azs) == 3
    error_message = "azs must list exactly 3 availability zones (multi-AZ)."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the private Kubernetes API."
  type        = list(string)
  default     = []
}

variable "global_database_id" {
  description = "Aurora global database identifier shared by the regions."
  type        = string
  default     = "aether-global"
}

variable "dns_zone_id" {
  description = "Route 53 hosted zone of the platform domain."
  type        = string
}

variable "domain" {
  description = "Platform domain (api.<domain> is the public entry)."
  type        = string
}

variable "lb_dns_name" {
  description = "Ingress load balancer DNS name, known after the first Helm deploy (empty: no DNS records yet)."
  type        = string
  default     = ""
}

variable "lb_zone_id" {
  description = "Hosted zone id of the ingress load balancer."
  type        = string
  default     = ""
}

variable "write_failover_target" {
  description = "This secondary is the failover target of write.<domain>."
  type        = bool
  default     = false
}

variable "opensearch_admin_role_arn" {
  description = "IAM role administering OpenSearch."
  type        = string
}

variable "data_residency_enforced" {
  description = "The region keeps resident personal data in-region (the chart's region.dataResidency.enforced)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
