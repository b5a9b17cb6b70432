'use strict';
// Request template of POST /jobs (API Gateway -> StartExecution). It passes the request body as
// the execution input and names the execution after the body's job_id (docs/aws-runtime.md), so
// that GET /jobs/{id} can find it. A body without job_id gives an empty name, which
// StartExecution rejects: the caller gets HTTP 400. The template is built here because its
// "${StateMachineArn}" is CloudFormation Fn::Sub syntax, not a serverless variable.
const TEMPLATE = [
  '#set( $body = $util.escapeJavaScript($input.json(\'$\')).replaceAll("\\\\\'", "\'") )',
  '#set( $name = $util.escapeJavaScript($input.path(\'$.job_id\')) )',
  '{"input": "$body", "name": "$name", "stateMachineArn": "${StateMachineArn}"}',
].join('\n');

module.exports = async ({ resolveVariable }) => {
  const stateMachineId = await resolveVariable('self:stepFunctions.stateMachines.wukong.id');
  const template = { 'Fn::Sub': [TEMPLATE, { StateMachineArn: { Ref: stateMachineId } }] };
  // form posts get the same template (the plugin's default would name executions by request id)
  return { 'application/json': template, 'application/x-www-form-urlencoded': template };
};
module.exports.TEMPLATE = TEMPLATE;
