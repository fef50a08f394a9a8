output "cluster_name" {
  description = "EKS cluster name."
  value       = module.cluster.cluster_name
}

output "kafka_bootstrap_brokers" {
  description = "MSK SASL/SCRAM bootstrap brokers."
  value       = module.kafka.bootstrap_brokers
}

output "postgres_writer_endpoint" {
  description = "Aurora writer endpoint (read-only in a secondary until promoted)."
  value       = module.postgres.writer_endpoint
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary endpoint."
  value       = module.redis.primary_endpoint
}

output "search_endpoint" {
  description = "OpenSearch HTTPS endpoint."
  value       = module.search.endpoint
}

output "bucket_names" {
  description = "S3 buckets by purpose."
  value       = module.storage.bucket_names
}

output "component_secret_names" {
  description = "Secrets Manager entries the chart's ExternalSecrets read."
  value       = { for k, s in aws_secretsmanager_secret.component : k => s.name }
}

output "helm_values" {
  description = "YAML for the chart, passed last: helm upgrade ... -f values/prod.yaml -f values/<region>.yaml -f <(terraform output -raw helm_values)."
  value = yamlencode({
    region = {
      name        = var.region_name
      cloudRegion = data.aws_region.current.name
      role        = var.role
      zones       = var.azs
    }
    endpoints = {
      kafkaBootstrap = module.kafka.bootstrap_brokers
      s3Endpoint     = ""
      s3Region       = data.aws_region.current.name
    }
    secrets = {
      externalSecrets = {
        keyPrefix = "aether/${var.environment}/${var.region_name}"
      }
    }
    default = {
      networkPolicy = { egressCIDRs = [module.network.vpc_cidr] }
    }
    ingress = {
      hosts          = [module.dns.api_host, module.dns.regional_api_host]
      allowFromCIDRs = [module.network.vpc_cidr]
    }
  })
}
