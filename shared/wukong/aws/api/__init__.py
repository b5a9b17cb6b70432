"""The job API of docs/http-api.md behind API Gateway (Lambda proxy integration): the submit function
(POST /uploads, POST /jobs) and the jobs function (GET /jobs, GET /jobs/{id}, its result, DELETE).
"""
