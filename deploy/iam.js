'use strict';
// One IAM role per Lambda function, with only what docs/aws-runtime.md says that function needs.
// serverless v3 has a single shared role per service, so serverless.yml names these roles with
// `role:` on every function instead.
//
// Resource "*" appears only where AWS offers no resource-level permission: the task-token calls
// of Step Functions, X-Ray, and the network-interface calls Lambda makes for VPC access.
const { settings } = require('./settings');

const ARN = (service, rest) => ({ 'Fn::Sub': `arn:\${AWS::Partition}:${service}:\${AWS::Region}:\${AWS::AccountId}:${rest}` });
const BUCKET_OBJECTS = (prefix) => ({ 'Fn::Sub': `\${JobBucket.Arn}/${prefix}*` });

// Lambda creates and deletes the function's network interfaces with the function's role
// (the ec2 actions of the AWSLambdaVPCAccessExecutionRole managed policy)
const VPC_ACCESS = {
  Effect: 'Allow',
  Action: [
    'ec2:CreateNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets',
    'ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses',
  ],
  Resource: '*',
};
const XRAY = { Effect: 'Allow', Action: ['xray:PutTraceSegments', 'xray:PutTelemetryRecords'], Resource: '*' };
const REDIS_SECRET = { Effect: 'Allow', Action: 'secretsmanager:GetSecretValue', Resource: { Ref: 'RedisPasswordSecret' } };

// per function: the statements beyond logs, VPC access, X-Ray and the Redis secret
function statements(names) {
  const invokeExecutor = {
    Effect: 'Allow',
    Action: 'lambda:InvokeFunction',
    Resource: ARN('lambda', `function:${names.executor}`),
  };
  return {
    planner: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: BUCKET_OBJECTS('graphs/') }],
    invoker: [invokeExecutor],
    executor: [
      invokeExecutor,
      // task tokens are not resources: these three actions cannot be scoped
      { Effect: 'Allow', Action: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'], Resource: '*' },
      // Lambda delivers the executor's OnFailure destination record with the executor's own role
      { Effect: 'Allow', Action: 'lambda:InvokeFunction', Resource: ARN('lambda', `function:${names.executorFailed}`) },
    ],
    // the OnFailure destination: ends the job in the MDS and fails the await state's task token
    executorFailed: [{ Effect: 'Allow', Action: 'states:SendTaskFailure', Resource: '*' }],
    waiter: [{ Effect: 'Allow', Action: ['states:SendTaskSuccess', 'states:SendTaskFailure'], Resource: '*' }],
    finalizer: [{ Effect: 'Allow', Action: 's3:PutObject', Resource: BUCKET_OBJECTS('results/') }],
    // presigned PUTs of graphs/ act with this role; the ranged GET checks an upload before its job starts
    submit: [
      { Effect: 'Allow', Action: 'states:StartExecution', Resource: ARN('states', `stateMachine:${names.stateMachine}`) },
      { Effect: 'Allow', Action: ['s3:PutObject', 's3:GetObject'], Resource: BUCKET_OBJECTS('graphs/') },
    ],
    // presigned GETs of results/ act with this role
    jobs: [
      { Effect: 'Allow', Action: 'states:ListExecutions', Resource: ARN('states', `stateMachine:${names.stateMachine}`) },
      {
        Effect: 'Allow',
        Action: ['states:DescribeExecution', 'states:StopExecution'],
        Resource: ARN('states', `execution:${names.stateMachine}:*`),
      },
      { Effect: 'Allow', Action: 's3:GetObject', Resource: BUCKET_OBJECTS('results/') },
    ],
  };
}

// functions that never talk to Redis, so they get no access to its password
const WITHOUT_REDIS = new Set(['submit']);

function roleLogicalId(functionKey) {
  return `${functionKey.charAt(0).toUpperCase()}${functionKey.slice(1)}Role`;
}

function logGroupLogicalId(functionKey) {
  return `${functionKey.charAt(0).toUpperCase()}${functionKey.slice(1)}LogGroup`;
}

function roles(names) {
  const resources = {};
  for (const [key, own] of Object.entries(statements(names))) {
    resources[roleLogicalId(key)] = {
      Type: 'AWS::IAM::Role',
      Properties: {
        Description: `Wukong ${key} function`,
        AssumeRolePolicyDocument: {
          Version: '2012-10-17',
          Statement: [{ Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' }],
        },
        Policies: [{
          PolicyName: `wukong-${key}`,
          PolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
                Resource: { 'Fn::GetAtt': [logGroupLogicalId(key), 'Arn'] },
              },
              VPC_ACCESS,
              XRAY,
              ...(WITHOUT_REDIS.has(key) ? [] : [REDIS_SECRET]),
              ...own,
            ],
          },
        }],
      },
    };
  }
  return resources;
}

module.exports = async ({ resolveVariable }) => {
  await settings(resolveVariable); // validate the params once more; cheap
  return roles({
    executor: await resolveVariable('self:custom.names.executor'),
    executorFailed: await resolveVariable('self:custom.names.executorFailed'),
    stateMachine: await resolveVariable('self:custom.names.stateMachine'),
  });
};
module.exports.FUNCTIONS = Object.keys(statements({}));
module.exports.roleLogicalId = roleLogicalId;
