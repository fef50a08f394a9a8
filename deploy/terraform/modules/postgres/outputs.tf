output "writer_endpoint" {
  description = "Writer endpoint (primary region; in a secondary it answers read-only until promoted)."
  value       = aws_rds_cluster.this.endpoint
}

output "reader_endpoint" {
  description = "Reader endpoint of the regional cluster."
  value       = aws_rds_cluster.this.reader_endpoint
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_rds_cluster.this.port
}

output "master_user_secret_arn" {
  description = "Secrets Manager ARN of the RDS-managed master password (primary only; empty in a secondary)."
  value       = try(aws_rds_cluster.this.master_user_secret[0].secret_arn, "")
}
