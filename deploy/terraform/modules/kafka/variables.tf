variable "name" {
  description = "MSK cluster name (aether-<env>-<region>)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,63}$", var.name))
    error_message = "name must be 3-64 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "kafka_version" {
  description = "Kafka version of the brokers."
  type        = string
  default     = "3.8.x"
}

variable "broker_instance_type" {
  description = "Broker instance type."
  type        = string
  default     = "kafka.m7g.large"
  validation {
    condition     = can(regex("^kafka\\.", var.broker_instance_type))
    error_message = "broker_instance_type must be an MSK type (kafka.*)."
  }
}

variable "brokers" {
  description = "Broker count: a multiple of the subnet (AZ) count."
  type        = number
  default     = 3
  validation {
    condition     = var.brokers >= 3
    error_message = "brokers must be at least 3 (replication factor 3, min.insync.replicas 2)."
  }
}

variable "volume_size_gb" {
  description = "EBS storage per broker, GiB."
  type        = number
  default     = 500
  validation {
    condition     = var.volume_size_gb >= 100 && var.volume_size_gb <= 16384
    error_message = "volume_size_gb must be between 100 and 16384."
  }
}

variable "vpc_id" {
  description = "VPC of the brokers."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per AZ (brokers are spread over them)."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "CIDRs allowed on the SASL/SCRAM TLS listener (9096): the VPC and the peer regions' VPCs (MirrorMaker 2)."
  type        = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_cidrs must be valid, non-empty and never 0.0.0.0/0."
  }
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and the broker logs."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
