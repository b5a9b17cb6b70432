"""Wukong's AWS runtime: the logic behind the Lambda handlers in functions/ and the Step Functions flow.

Importing this package needs neither boto3 nor Powertools; the modules that do import them are only
loaded by the handlers and the submit helper. docs/aws-runtime.md is the contract with the deployment.
"""
