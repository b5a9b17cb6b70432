'use strict';
// The KV shards: `kvShards` Redis servers for intermediate values, generated at package time.
//
// kvBackend=fargate (default): one ECS service per shard (one Fargate task each, in the private
//   subnets), registered in Cloud Map as kv<i>.<namespace>, so every shard has its own stable
//   DNS name for the client's consistent hashing. Plain Redis protocol with AUTH; the password
//   comes from the stack's secret through ECS secret injection into a private config file.
// kvBackend=elasticache: one single-node replication group per shard, with AUTH and in-transit
//   encryption (ElastiCache only allows an AUTH token with TLS, hence redisTls=true).
//
// Either way only FunctionsSecurityGroup may reach them (deploy/network.yml).
const { settings } = require('./settings');

const shardIds = (count) => Array.from({ length: count }, (_, i) => i + 1);

function fargateShards(s, naming) {
  const resources = {
    KvCluster: {
      Type: 'AWS::ECS::Cluster',
      Properties: { ClusterSettings: [{ Name: 'containerInsights', Value: 'disabled' }] },
    },
    KvNamespace: {
      Type: 'AWS::ServiceDiscovery::PrivateDnsNamespace',
      Properties: {
        Name: naming.namespace,
        Vpc: { Ref: 'Vpc' },
        Description: 'Wukong KV shards (one A record per shard)',
      },
    },
    KvLogGroup: {
      Type: 'AWS::Logs::LogGroup',
      Properties: { RetentionInDays: 14 },
    },
    KvTaskExecutionRole: {
      Type: 'AWS::IAM::Role',
      Properties: {
        AssumeRolePolicyDocument: {
          Version: '2012-10-17',
          Statement: [{
            Effect: 'Allow',
            Principal: { Service: 'ecs-tasks.amazonaws.com' },
            Action: 'sts:AssumeRole',
          }],
        },
        Policies: [{
          PolicyName: 'kv-shard-task-execution',
          PolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
                Resource: { 'Fn::GetAtt': ['KvLogGroup', 'Arn'] },
              },
              {
                Effect: 'Allow',
                Action: 'secretsmanager:GetSecretValue',
                Resource: { Ref: 'RedisPasswordSecret' },
              },
            ],
          },
        }],
      },
    },
    KvTaskDefinition: {
      Type: 'AWS::ECS::TaskDefinition',
      Properties: {
        RequiresCompatibilities: ['FARGATE'],
        NetworkMode: 'awsvpc',
        Cpu: String(s.kvCpu),
        Memory: String(s.kvMemory),
        RuntimePlatform: { CpuArchitecture: s.platform.ecs, OperatingSystemFamily: 'LINUX' },
        ExecutionRoleArn: { 'Fn::GetAtt': ['KvTaskExecutionRole', 'Arn'] },
        ContainerDefinitions: [{
          Name: 'redis',
          Image: s.kvImage,
          Essential: true,
          PortMappings: [{ ContainerPort: s.redisPort, Protocol: 'tcp' }],
          Secrets: [{ Name: 'REDIS_PASSWORD', ValueFrom: { Ref: 'RedisPasswordSecret' } }],
          Environment: [
            { Name: 'REDIS_PORT', Value: String(s.redisPort) },
            // leave a quarter of the task's memory to Redis itself and the OS
            { Name: 'REDIS_MAXMEMORY', Value: `${Math.floor((s.kvMemory * 3) / 4)}mb` },
          ],
          // the image's own entrypoint is replaced, so run as its unprivileged user; the
          // configuration (password included) goes to a private file, never to argv, and
          // redis-server replaces the shell so that it gets ECS's SIGTERM
          User: 'redis',
          EntryPoint: ['sh', '-c'],
          Command: [
            'umask 077 && printf \'port %s\\nrequirepass "%s"\\nsave ""\\nappendonly no\\n'
            + 'maxmemory %s\\nmaxmemory-policy noeviction\\n\' '
            + '"$REDIS_PORT" "$REDIS_PASSWORD" "$REDIS_MAXMEMORY" > /tmp/redis.conf '
            + '&& exec redis-server /tmp/redis.conf',
          ],
          HealthCheck: {
            Command: ['CMD-SHELL', 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -p "$REDIS_PORT" ping | grep -q PONG'],
            Interval: 15,
            Timeout: 5,
            Retries: 3,
            StartPeriod: 10,
          },
          LogConfiguration: {
            LogDriver: 'awslogs',
            Options: {
              'awslogs-group': { Ref: 'KvLogGroup' },
              'awslogs-region': { Ref: 'AWS::Region' },
              'awslogs-stream-prefix': 'kv',
            },
          },
        }],
      },
    },
  };
  const endpoints = [];
  for (const i of shardIds(s.kvShards)) {
    resources[`KvShard${i}Discovery`] = {
      Type: 'AWS::ServiceDiscovery::Service',
      Properties: {
        Name: `kv${i}`,
        NamespaceId: { Ref: 'KvNamespace' },
        DnsConfig: { DnsRecords: [{ Type: 'A', TTL: 10 }], RoutingPolicy: 'MULTIVALUE' },
        HealthCheckCustomConfig: { FailureThreshold: 1 },
      },
    };
    resources[`KvShard${i}Service`] = {
      Type: 'AWS::ECS::Service',
      // the task pulls its image through the NAT
      DependsOn: ['PrivateDefaultRoute'],
      Properties: {
        Cluster: { Ref: 'KvCluster' },
        LaunchType: 'FARGATE',
        DesiredCount: 1,
        TaskDefinition: { Ref: 'KvTaskDefinition' },
        // a shard is state: never run two tasks under one name, even during an update
        DeploymentConfiguration: { MinimumHealthyPercent: 0, MaximumPercent: 100 },
        NetworkConfiguration: {
          AwsvpcConfiguration: {
            AssignPublicIp: 'DISABLED',
            Subnets: [{ Ref: 'PrivateSubnetA' }, { Ref: 'PrivateSubnetB' }],
            SecurityGroups: [{ Ref: 'KvSecurityGroup' }],
          },
        },
        ServiceRegistries: [{ RegistryArn: { 'Fn::GetAtt': [`KvShard${i}Discovery`, 'Arn'] } }],
      },
    };
    endpoints.push(`kv${i}.${naming.namespace}:${s.redisPort}`);
  }
  return { resources, endpoints };
}

function elasticacheShards(s) {
  const resources = {
    KvSubnetGroup: {
      Type: 'AWS::ElastiCache::SubnetGroup',
      Properties: {
        Description: 'Wukong KV shards',
        SubnetIds: [{ Ref: 'PrivateSubnetA' }, { Ref: 'PrivateSubnetB' }],
      },
    },
  };
  const endpoints = [];
  for (const i of shardIds(s.kvShards)) {
    resources[`KvShard${i}`] = {
      Type: 'AWS::ElastiCache::ReplicationGroup',
      Properties: {
        ReplicationGroupDescription: `Wukong KV shard ${i}`,
        Engine: 'redis',
        CacheNodeType: s.kvNodeType,
        NumCacheClusters: 1,
        AutomaticFailoverEnabled: false,
        Port: s.redisPort,
        TransitEncryptionEnabled: true,
        AtRestEncryptionEnabled: true,
        AuthToken: { 'Fn::Sub': '{{resolve:secretsmanager:${RedisPasswordSecret}}}' },
        CacheSubnetGroupName: { Ref: 'KvSubnetGroup' },
        SecurityGroupIds: [{ Ref: 'KvSecurityGroup' }],
      },
    };
    endpoints.push({
      'Fn::Sub': `\${KvShard${i}.PrimaryEndPoint.Address}:\${KvShard${i}.PrimaryEndPoint.Port}`,
    });
  }
  return { resources, endpoints };
}

async function build(resolveVariable) {
  const s = await settings(resolveVariable);
  const service = await resolveVariable('self:service');
  const stage = await resolveVariable('sls:stage');
  const naming = { namespace: `${service}-${stage}.internal`.toLowerCase() };
  const shards = s.kvBackend === 'elasticache' ? elasticacheShards(s) : fargateShards(s, naming);
  // the MDS on the EC2 host comes first; the shards follow (see docs/aws-runtime.md)
  const mds = { 'Fn::Sub': `\${MdsHost.PrivateIp}:${s.redisPort}` };
  return {
    resources: shards.resources,
    endpoints: { 'Fn::Join': [',', [mds, ...shards.endpoints]] },
    shardEndpoints: shards.endpoints,
  };
}

module.exports = {
  build,
  resources: async ({ resolveVariable }) => (await build(resolveVariable)).resources,
  endpoints: async ({ resolveVariable }) => (await build(resolveVariable)).endpoints,
};
