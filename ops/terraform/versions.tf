terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5, < 4.0"
    }
  }

  # State holds the generated database password: keep it in an encrypted, access-
  # controlled backend, e.g.
  #   terraform init -backend-config="bucket=my-tf-state" \
  #     -backend-config="key=mcp-gateway/production.tfstate" -backend-config="region=eu-west-1" \
  #     -backend-config="encrypt=true" -backend-config="use_lockfile=true"
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      Application = var.name
      Environment = var.environment
      ManagedBy   = "terraform"
    })
  }
}
