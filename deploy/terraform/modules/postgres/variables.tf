variable "name" {
  description = "Cluster identifier (aether-<env>-<region>)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,50}$", var.name))
    error_message = "name must be 3-51 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "engine_version" {
  description = "Aurora PostgreSQL engine version."
  type        = string
  default     = "16.6"
  validation {
    condition     = can(regex("^1[5-7]\\.[0-9]+$", var.engine_version))
    error_message = "engine_version must be Aurora PostgreSQL 15, 16 or 17 (MAJOR.MINOR)."
  }
}

variable "role" {
  description = "primary: creates the Aurora global database and its writer; secondary: joins it as a read-only cluster, promotable on failover."
  type        = string
  validation {
    condition     = contains(["primary", "secondary"], var.role)
    error_message = "role must be primary or secondary."
  }
}

variable "global_cluster_identifier" {
  description = "Aurora global database identifier, the same in every region."
  type        = string
}

variable "instance_class" {
  description = "Instance class of every cluster instance."
  type        = string
  default     = "db.r6g.large"
  validation {
    condition     = can(regex("^db\\.", var.instance_class))
    error_message = "instance_class must be an RDS class (db.*)."
  }
}

variable "instances" {
  description = "Instances in the regional cluster (writer + readers in the primary), spread over AZs."
  type        = number
  default     = 3
  validation {
    condition     = var.instances >= 1 && var.instances <= 15
    error_message = "instances must be between 1 and 15."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per AZ."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "CIDRs allowed on 5432 (the VPC: the EKS pods)."
  type        = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_cidrs must be valid, non-empty and never 0.0.0.0/0."
  }
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14
  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "kms_key_arn" {
  description = "KMS key for storage encryption and Performance Insights."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
