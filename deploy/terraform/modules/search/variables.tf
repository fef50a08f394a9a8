variable "name" {
  description = "OpenSearch domain name (aether-<env>-<region>, 28 characters at most)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,27}$", var.name))
    error_message = "name must be 3-28 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "engine_version" {
  description = "OpenSearch engine version (the services use the Elasticsearch 8-compatible API subset)."
  type        = string
  default     = "OpenSearch_2.17"
  validation {
    condition     = can(regex("^OpenSearch_[0-9]+\\.[0-9]+$", var.engine_version))
    error_message = "engine_version must look like OpenSearch_2.17."
  }
}

variable "instance_type" {
  description = "Data node instance type."
  type        = string
  default     = "r6g.large.search"
}

variable "instance_count" {
  description = "Data nodes: a multiple of the AZ count (3)."
  type        = number
  default     = 3
  validation {
    condition     = var.instance_count >= 3 && var.instance_count % 3 == 0
    error_message = "instance_count must be a multiple of 3 (one per AZ) and at least 3."
  }
}

variable "volume_size_gb" {
  description = "EBS storage per data node, GiB."
  type        = number
  default     = 200
}

variable "vpc_id" {
  description = "VPC of the domain."
  type        = string
}

variable "subnet_ids" {
  description = "Three private subnets (zone awareness over 3 AZs)."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) == 3
    error_message = "subnet_ids must be exactly 3 subnets in 3 AZs."
  }
}

variable "allowed_cidrs" {
  description = "CIDRs allowed on 443."
  type        = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_cidrs must be valid, non-empty and never 0.0.0.0/0."
  }
}

variable "master_user_arn" {
  description = "IAM role ARN that administers the domain (fine-grained access control)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key for encryption at rest."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
