variable "name" {
  description = "Replication group id (aether-<env>-<region>)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,39}$", var.name))
    error_message = "name must be 3-40 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r7g.large"
  validation {
    condition     = can(regex("^cache\\.", var.node_type))
    error_message = "node_type must be an ElastiCache type (cache.*)."
  }
}

variable "replicas_per_shard" {
  description = "Replicas per shard (at least 1 for automatic multi-AZ failover)."
  type        = number
  default     = 2
  validation {
    condition     = var.replicas_per_shard >= 1 && var.replicas_per_shard <= 5
    error_message = "replicas_per_shard must be between 1 and 5."
  }
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "vpc_id" {
  description = "VPC of the replication group."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per AZ."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "CIDRs allowed on 6379."
  type        = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_cidrs must be valid, non-empty and never 0.0.0.0/0."
  }
}

variable "auth_token_secret_arn" {
  description = "Secrets Manager secret (plain string) holding the Redis AUTH token."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for at-rest encryption."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
