# One region of Aether: network, EKS, Aurora PostgreSQL (global), ElastiCache, MSK, OpenSearch,
# S3 and Route 53, wired together; envs/<region> only chooses the values.
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  name = "aether-${var.environment}-${var.region_name}"
  tags = merge(var.tags, {
    Project       = "aether"
    Environment   = var.environment
    Region        = var.region_name
    RegionRole    = var.role
    DataResidency = var.data_residency_enforced ? "enforced" : "none"
    ManagedBy     = "terraform"
  })
  vpc_only = [module.network.vpc_cidr]
}

resource "aws_kms_key" "this" {
  description             = "${local.name}: EKS secrets, datastores, logs, buckets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

data "aws_iam_policy_document" "kms" {
  statement {
    sid       = "AccountAdmin"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.this.key_id
}

module "network" {
  source      = "../network"
  name        = local.name
  cidr        = var.vpc_cidr
  azs         = var.azs
  kms_key_arn = aws_kms_key.this.arn
  tags        = local.tags
}

module "cluster" {
  source             = "../kubernetes_cluster"
  name               = local.name
  vpc_id             = module.network.vpc_id
  private_subnet_ids = module.network.private_subnet_ids
  admin_cidrs        = var.admin_cidrs
  kms_key_arn        = aws_kms_key.this.arn
  tags               = local.tags
}

module "postgres" {
  source                    = "../postgres"
  name                      = local.name
  role                      = var.role
  global_cluster_identifier = var.global_database_id
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  allowed_cidrs             = local.vpc_only
  kms_key_arn               = aws_kms_key.this.arn
  tags                      = local.tags
}

# The Redis AUTH token lives in Secrets Manager (set by an operator, rotated there).
resource "aws_secretsmanager_secret" "redis_auth" {
  name       = "${local.name}/redis-auth-token"
  kms_key_id = aws_kms_key.this.arn
  tags       = local.tags
}

module "redis" {
  source                = "../redis"
  name                  = local.name
  vpc_id                = module.network.vpc_id
  subnet_ids            = module.network.private_subnet_ids
  allowed_cidrs         = local.vpc_only
  auth_token_secret_arn = aws_secretsmanager_secret.redis_auth.arn
  kms_key_arn           = aws_kms_key.this.arn
  tags                  = local.tags
}

module "kafka" {
  source        = "../kafka"
  name          = local.name
  vpc_id        = module.network.vpc_id
  subnet_ids    = module.network.private_subnet_ids
  allowed_cidrs = concat(local.vpc_only, var.peer_vpc_cidrs)
  kms_key_arn   = aws_kms_key.this.arn
  tags          = local.tags
}

module "search" {
  source          = "../search"
  name            = local.name
  vpc_id          = module.network.vpc_id
  subnet_ids      = module.network.private_subnet_ids
  allowed_cidrs   = local.vpc_only
  master_user_arn = var.opensearch_admin_role_arn
  kms_key_arn     = aws_kms_key.this.arn
  tags            = local.tags
}

module "storage" {
  source      = "../object_storage"
  name        = "${local.name}-${data.aws_caller_identity.current.account_id}"
  kms_key_arn = aws_kms_key.this.arn
  tags        = local.tags
}

module "dns" {
  source                = "../dns"
  zone_id               = var.dns_zone_id
  domain                = var.domain
  region_name           = var.region_name
  aws_region            = data.aws_region.current.name
  role                  = var.role
  write_failover_target = var.write_failover_target
  lb_dns_name           = var.lb_dns_name
  lb_zone_id            = var.lb_zone_id
  tags                  = local.tags
}

# One Secrets Manager entry per component: a JSON object of ENV_NAME: value (DSNs with the
# component's own database user, Redis URL with the AUTH token...), written by the database
# bootstrap runbook, synced into the cluster by the chart's ExternalSecrets
# (secrets.externalSecrets.keyPrefix = aether/<env>/<region>).
resource "aws_secretsmanager_secret" "component" {
  for_each   = toset(["gateway", "auth", "chat", "discussion", "charts", "alerts", "ai", "memory", "worker", "audit"])
  name       = "aether/${var.environment}/${var.region_name}/${each.key}"
  kms_key_id = aws_kms_key.this.arn
  tags       = local.tags
}
