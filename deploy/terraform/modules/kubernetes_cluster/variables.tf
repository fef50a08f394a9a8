variable "name" {
  description = "Cluster name (aether-<env>-<region>)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,38}$", var.name))
    error_message = "name must be 3-39 lower-case letters, digits or dashes, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (the chart is validated against 1.33)."
  type        = string
  default     = "1.33"
  validation {
    condition     = can(regex("^1\\.(29|3[0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.29 or later, as MAJOR.MINOR."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (one per AZ) for the control plane ENIs and the nodes."
  type        = list(string)
  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids needs at least 2 subnets in different AZs."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the private API endpoint (VPN, bastion)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must be valid CIDRs."
  }
}

variable "node_instance_types" {
  description = "Instance types of the managed node group."
  type        = list(string)
  default     = ["m6i.xlarge", "m6a.xlarge"]
}

variable "node_min" {
  description = "Smallest node count (at least one per AZ)."
  type        = number
  default     = 3
  validation {
    condition     = var.node_min >= 1
    error_message = "node_min must be at least 1."
  }
}

variable "node_max" {
  description = "Largest node count (cluster autoscaler / Karpenter bound)."
  type        = number
  default     = 30
  validation {
    condition     = var.node_max >= 1
    error_message = "node_max must be at least 1."
  }
}

variable "kms_key_arn" {
  description = "KMS key for envelope encryption of Kubernetes Secrets and the control-plane logs."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
