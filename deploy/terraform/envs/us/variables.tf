variable "environment" {
  description = "staging or prod."
  type        = string
  default     = "prod"
  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "dns_zone_id" {
  description = "Route 53 hosted zone id of the platform domain."
  type        = string
  validation {
    condition     = can(regex("^Z[A-Z0-9]{4,32}$", var.dns_zone_id))
    error_message = "dns_zone_id must be a Route 53 hosted zone id (Z...)."
  }
}

variable "domain" {
  description = "Platform domain."
  type        = string
  default     = "aether.example"
}

variable "opensearch_admin_role_arn" {
  description = "IAM role administering OpenSearch."
  type        = string
  validation {
    condition     = can(regex("^arn:aws:iam::[0-9]{12}:role/.+$", var.opensearch_admin_role_arn))
    error_message = "opensearch_admin_role_arn must be an IAM role ARN."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the private Kubernetes API (VPN)."
  type        = list(string)
  default     = []
}

variable "lb_dns_name" {
  description = "Ingress load balancer DNS name after the first Helm deploy (empty: DNS records not yet created)."
  type        = string
  default     = ""
}

variable "lb_zone_id" {
  description = "Hosted zone id of the ingress load balancer."
  type        = string
  default     = ""
}
