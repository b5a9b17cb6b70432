'use strict';
// Where the planner tells executors the KV proxy is (WUKONG_PROXY_ADDRESS / WUKONG_PROXY_PORT, copied
// into every job's settings): the MDS host's private address, or no address with kvProxy=false, so
// executors do every fan-out themselves.
const { settings } = require('./settings');

module.exports = {
  // an empty address switches the proxy off (plan_job needs both); the port stays a valid number
  address: async ({ resolveVariable }) => ((await settings(resolveVariable)).kvProxy
    ? { 'Fn::GetAtt': ['MdsHost', 'PrivateIp'] } : ''),
  port: async ({ resolveVariable }) => String((await settings(resolveVariable)).proxyPort),
};
