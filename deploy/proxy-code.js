'use strict';
// A local plugin: tells the MDS host where this deployment's code is, so the KV proxy runs the
// same wukong package as the functions. Serverless uploads the bundle to its deployment bucket
// under a key it only picks while packaging, so the key is copied from the invoker's Code into
// the ProxyCodeParameter (deploy/mds.yml) after the template is assembled. The host polls that
// parameter (proxy_ec2/bootstrap.sh, wukong-proxy-update.timer), so a redeploy updates the proxy
// without touching the instance (a change of user data would stop and start it, and the MDS).

class ProxyCode {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'after:aws:package:finalize:mergeCustomProviderResources': () => this.fill(),
    };
  }

  fill() {
    const resources = this.serverless.service.provider.compiledCloudFormationTemplate.Resources;
    const parameter = resources.ProxyCodeParameter;
    // the invoker always runs from the zip (functionPackage=image moves the executor to an image)
    const invoker = resources.InvokerLambdaFunction;
    if (!parameter || !invoker) {
      throw new Error('deploy/proxy-code.js: the template has no ProxyCodeParameter or InvokerLambdaFunction');
    }
    const { S3Bucket, S3Key } = invoker.Properties.Code;
    parameter.Properties.Value = { 'Fn::Join': ['', ['s3://', S3Bucket, '/', S3Key]] };
  }
}

module.exports = ProxyCode;
