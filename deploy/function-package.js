'use strict';
// A local plugin: serverless.yml's functionPackage=image moves the planner, the executor and the
// finalizer from the zip bundle to the container image of deploy/executor-image/Dockerfile (built
// and pushed to ECR by `serverless deploy`, or a prebuilt one named by imageUri). serverless.yml
// keeps one plain definition per function; this swaps `handler` for `image` before packaging,
// because a function may have one of the two, not both, and YAML cannot drop a key conditionally.

const IMAGE_NAME = 'wukong';

class FunctionPackage {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { initialize: () => this.apply() };
  }

  apply() {
    const service = this.serverless.service;
    const choice = service.custom.functionPackage;
    if (!choice || choice.mode !== 'image') return;
    service.provider.ecr = { ...(service.provider.ecr || {}), images: { [IMAGE_NAME]: choice.image } };
    for (const name of choice.functions) {
      const fn = service.functions[name];
      if (!fn || !fn.handler) {
        throw new Error(`deploy/function-package.js: no function ${name} with a handler to move to the image`);
      }
      // the image holds every handler (the same layout as the zip); each function names its own
      fn.image = { name: IMAGE_NAME, command: [fn.handler] };
      delete fn.handler;
    }
  }
}

module.exports = FunctionPackage;
