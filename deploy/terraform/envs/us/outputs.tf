output "helm_values" {
  description = "Values for the chart from this apply: pass last to helm (-f <(terraform output -raw helm_values))."
  value       = module.region.helm_values
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = module.region.cluster_name
}

output "kafka_bootstrap_brokers" {
  description = "MSK bootstrap brokers (the other regions' replication.mirrorMaker2.sources)."
  value       = module.region.kafka_bootstrap_brokers
}

output "component_secret_names" {
  description = "Secrets Manager entries to fill before the first deploy."
  value       = module.region.component_secret_names
}
