output "bucket_names" {
  description = "Names of the data buckets by purpose: raw-logs, features, predictions, models, mlflow-artifacts."
  value       = { for purpose, bucket in aws_s3_bucket.data : purpose => bucket.id }
}

output "bucket_arns" {
  description = "ARNs of the data buckets by purpose."
  value       = { for purpose, bucket in aws_s3_bucket.data : purpose => bucket.arn }
}

output "raw_logs_bucket" {
  description = "Name of the bucket with raw click logs under raw/dt=YYYY-MM-DD/."
  value       = aws_s3_bucket.data["raw-logs"].id
}

output "features_bucket" {
  description = "Name of the bucket with feature partitions under features/dt=YYYY-MM-DD/ and the incoming/ prefix that notifies the scoring queue."
  value       = aws_s3_bucket.data["features"].id
}

output "predictions_bucket" {
  description = "Name of the bucket that workers write predictions to: PREDICTIONS_BUCKET of the workers."
  value       = aws_s3_bucket.data["predictions"].id
}

output "models_bucket" {
  description = "Name of the bucket that holds the model store."
  value       = aws_s3_bucket.data["models"].id
}

output "mlflow_artifacts_bucket" {
  description = "Name of the bucket for MLflow run artifacts."
  value       = aws_s3_bucket.data["mlflow-artifacts"].id
}

output "model_store_uri" {
  description = "S3 prefix of the model store, where each model version's bundle lives under <name>/<version>/: MODEL_STORE_URI of the workers."
  value       = "s3://${aws_s3_bucket.data["models"].id}/models"
}

output "mlflow_artifact_root" {
  description = "S3 URI for MLflow's --default-artifact-root (or --artifacts-destination)."
  value       = "s3://${aws_s3_bucket.data["mlflow-artifacts"].id}/artifacts"
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the data buckets. Readers need kms:Decrypt on it, writers also kms:GenerateDataKey."
  value       = aws_kms_key.data.arn
}

output "access_logs_bucket" {
  description = "Name of the bucket that receives the S3 server access logs of the data buckets."
  value       = aws_s3_bucket.access_logs.id
}
