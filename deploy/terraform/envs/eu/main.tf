# Region eu (eu-west-1): secondary.
module "region" {
  source                    = "../../modules/region"
  environment               = var.environment
  region_name               = "eu"
  role                      = "secondary"
  vpc_cidr                  = "10.20.0.0/16"
  peer_vpc_cidrs            = ["10.10.0.0/16", "10.30.0.0/16"]
  azs                       = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  admin_cidrs               = var.admin_cidrs
  dns_zone_id               = var.dns_zone_id
  domain                    = var.domain
  lb_dns_name               = var.lb_dns_name
  lb_zone_id                = var.lb_zone_id
  write_failover_target     = true
  opensearch_admin_role_arn = var.opensearch_admin_role_arn
  data_residency_enforced   = true
}
