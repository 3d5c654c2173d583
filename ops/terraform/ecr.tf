# Image repositories for ops/scripts/build-and-push.sh. Tags are immutable: deploy by
# the tag the script prints (image_tag), roll back by applying the previous one.

resource "aws_ecr_repository" "gateway" {
  name                 = var.gateway_repository_name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

resource "aws_ecr_repository" "sidecar" {
  name                 = var.sidecar_repository_name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.main.arn
  }
}

locals {
  ecr_lifecycle = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 50 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 50
      }
      action = { type = "expire" }
    }]
  })
}

resource "aws_ecr_lifecycle_policy" "gateway" {
  repository = aws_ecr_repository.gateway.name
  policy     = local.ecr_lifecycle
}

resource "aws_ecr_lifecycle_policy" "sidecar" {
  repository = aws_ecr_repository.sidecar.name
  policy     = local.ecr_lifecycle
}
