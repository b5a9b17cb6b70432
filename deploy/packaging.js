'use strict';
// serverless-python-requirements settings that depend on the target: pip installs binary wheels
// for the Lambda platform (architecture and Python version of the runtime) whatever machine
// packages, so no Docker and no compiler are needed, and nothing built for the packaging host
// can slip into the bundle. Downloads and the installed set are cached per Python version
// under the user's cache directory (the plugin's static cache already tells architectures apart).
const crypto = require('crypto');
const os = require('os');
const path = require('path');
const { settings } = require('./settings');

// Lambda's Python 3.12+ runtimes run on Amazon Linux 2023, glibc 2.34. pip does not widen a
// manylinux_2_X tag to older glibc versions by itself, so every compatible tag is listed.
const LAMBDA_GLIBC_MINOR = 34;

function platforms(machine) {
  const tags = [`manylinux2014_${machine}`]; // pip adds manylinux2010/manylinux1 for x86_64
  for (let minor = 17; minor <= LAMBDA_GLIBC_MINOR; minor += 1) tags.push(`manylinux_2_${minor}_${machine}`);
  return tags;
}

// functionPackage=image: the functions that unpickle user objects (the graph, task values,
// results) run from the container image, so packages too big for the zip (scikit-learn, dask-ml,
// pandas) can be loaded there; the others stay on the zip, smaller and quicker to start.
const IMAGE_FUNCTIONS = ['planner', 'executor', 'finalizer'];
const DOCKERFILE = 'deploy/executor-image/Dockerfile';

// What the zip bundle leaves out of the installed requirements (serverless.yml `slim`): the
// libraries' own test suites (numpy, scipy, dask, ...), never imported at run time.
const SLIM_PATTERNS = ['**/tests'];

module.exports = {
  slimPatterns: SLIM_PATTERNS,
  // read by deploy/function-package.js
  functionPackage: async ({ resolveVariable }) => {
    const s = await settings(resolveVariable);
    return {
      mode: s.functionPackage,
      functions: IMAGE_FUNCTIONS,
      // a prebuilt image, or else serverless builds the Dockerfile for the Lambda architecture
      image: s.imageUri ? { uri: s.imageUri } : {
        path: './',
        file: DOCKERFILE,
        platform: `linux/${s.architecture === 'arm64' ? 'arm64' : 'amd64'}`,
        buildArgs: { PYTHON_VERSION: s.pythonVersion },
        // BuildKit's default provenance attestation makes the push an image index, which Lambda
        // refuses ("image manifest ... media type ... is not supported"); a string, as osls
        // passes it on as --provenance=<value> and drops a boolean false
        provenance: 'false',
      },
    };
  },
  pipArgs: async ({ resolveVariable }) => {
    const s = await settings(resolveVariable);
    return [
      ...platforms(s.platform.machine).flatMap((tag) => ['--platform', tag]),
      '--python-version', s.pythonVersion,
      '--implementation', 'cp',
      '--only-binary=:all:',
    ];
  },
  cacheLocation: async ({ resolveVariable }) => {
    const s = await settings(resolveVariable);
    const base = process.env.WUKONG_SLS_CACHE_DIR
      || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'wukong-serverless');
    // the plugin's static cache is keyed by the requirements alone, so a change of what is
    // slimmed away must change the folder, or an older, unslimmed install would be reused
    const slim = crypto.createHash('sha256').update(JSON.stringify(SLIM_PATTERNS)).digest('hex').slice(0, 8);
    return path.join(base, `python${s.pythonVersion}-slim-${slim}`);
  },
};
