variable "name" {
  description = "Bucket name prefix (globally unique: aether-<env>-<region>-<account>)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 lower-case letters, digits or dashes."
  }
}

variable "buckets" {
  description = "Buckets to create, by purpose (e.g. charts: chart images behind signed URLs; market-archive: bars beyond retention, kept; worker: job artifacts; chat-archive: messages beyond retention, kept)."
  type        = set(string)
  default     = ["charts", "chat-archive", "exports", "market-archive", "worker"]
  validation {
    condition     = alltrue([for b in var.buckets : can(regex("^[a-z0-9-]{2,20}$", b))])
    error_message = "bucket purposes must be 2-20 lower-case letters, digits or dashes."
  }
}

variable "noncurrent_version_days" {
  description = "Days a replaced object version is kept (undo window)."
  type        = number
  default     = 30
  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "expire_after_days" {
  description = "Days after which current objects expire, by bucket purpose (purposes not named keep theirs). Chart images are a cache: charts draws an expired one again on demand."
  type        = map(number)
  default     = { charts = 30 }
  validation {
    condition     = alltrue([for days in values(var.expire_after_days) : days >= 1])
    error_message = "expire_after_days values must be at least 1."
  }
}

variable "access_log_bucket" {
  description = "Bucket receiving the server access logs (\"\" to create one per module)."
  type        = string
  default     = ""
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
