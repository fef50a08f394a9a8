terraform {
  required_version = ">= 1.6.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.90"
    }
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
  # State per region and environment: terraform init -backend-config=backend-<env>.hcl
  # (bucket, key = aether/<env>/eu.tfstate, region, dynamodb_table / use_lockfile).
  backend "s3" {}
}

provider "aws" {
  region = "eu-west-1"
  default_tags {
    tags = {
      Project = "aether"
      Region  = "eu"
    }
  }
}
