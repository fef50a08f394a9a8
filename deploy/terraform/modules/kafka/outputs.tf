output "bootstrap_brokers" {
  description = "SASL/SCRAM TLS bootstrap brokers (AETHER_KAFKA_BOOTSTRAP, the chart's endpoints.kafkaBootstrap)."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "cluster_arn" {
  description = "MSK cluster ARN (SCRAM secret association, IAM policies)."
  value       = aws_msk_cluster.this.arn
}
