'use strict';
// User data of the MDS host: proxy_ec2/bootstrap.sh verbatim, after a header of `export` lines
// that carry this stack's values (region, stack, secret, ports, TLS). The script is read here, not
// through ${file()}, so its shell ${...} expansions never meet serverless's variable syntax.
const fs = require('fs');
const path = require('path');
const { settings } = require('./settings');
const kv = require('./kv');

const BOOTSTRAP = path.join(__dirname, '..', 'proxy_ec2', 'bootstrap.sh');

function exportLine(name, value) {
  return ['export ', name, '=', value, '\n'];
}

module.exports = async ({ resolveVariable }) => {
  const s = await settings(resolveVariable);
  const script = fs.readFileSync(BOOTSTRAP, 'utf8').replace(/^#!.*\n/, '');
  const parts = [
    '#!/bin/bash\n',
    '# generated from proxy_ec2/bootstrap.sh by deploy/mds.js\n',
    ...exportLine('WUKONG_REGION', { Ref: 'AWS::Region' }),
    ...exportLine('WUKONG_STACK', { Ref: 'AWS::StackName' }),
    ...exportLine('WUKONG_SIGNAL_RESOURCE', 'MdsHost'),
    ...exportLine('WUKONG_REDIS_PASSWORD_SECRET', { Ref: 'RedisPasswordSecret' }),
    ...exportLine('WUKONG_REDIS_PORT', String(s.redisPort)),
    ...exportLine('WUKONG_REDIS_TLS', String(s.redisTls)),
    ...exportLine('WUKONG_PROXY_PORT', String(s.proxyPort)),
    ...exportLine('WUKONG_MDS_MAXMEMORY_PERCENT', String(s.mdsMaxMemoryPercent)),
    // the KV proxy: the executor function it invokes, and the parameter naming this deployment's code
    ...exportLine('WUKONG_EXECUTOR_FUNCTION', await resolveVariable('self:custom.names.executor')),
    ...exportLine('WUKONG_PROXY_CODE_PARAMETER', await resolveVariable('self:custom.names.proxyCodeParameter')),
    ...exportLine('WUKONG_KV_PROXY', String(s.kvProxy)),
    // for the proxy on this host: the MDS on loopback first, then the shards
    ...exportLine('WUKONG_REDIS_ENDPOINTS', {
      'Fn::Join': [',', [`127.0.0.1:${s.redisPort}`, ...(await kv.build(resolveVariable)).shardEndpoints]],
    }),
    script,
  ];
  return { 'Fn::Base64': { 'Fn::Join': ['', parts] } };
};
module.exports.BOOTSTRAP = BOOTSTRAP;
