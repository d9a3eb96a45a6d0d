# The AWS account of this environment. It lives in a committed file, not in
# the git-ignored terraform.tfvars, because every role ARN, queue URL and
# image name in the GitOps overlay of this environment names it too, and
# tests/terraform/test_gitops_agreement.py checks that the two agree.
aws_account_id = "111122223333"
