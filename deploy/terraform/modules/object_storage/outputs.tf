output "bucket_names" {
  description = "Bucket name by purpose (the services' bucket settings)."
  value       = { for k, b in aws_s3_bucket.this : k => b.id }
}

output "bucket_arns" {
  description = "Bucket ARN by purpose (IRSA policies of the components that use them)."
  value       = { for k, b in aws_s3_bucket.this : k => b.arn }
}
