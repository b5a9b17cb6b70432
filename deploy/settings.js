'use strict';
// The deployment's parameters (serverless.yml `params`, overridable with `--param="name=value"`),
// read and checked once for the JS resolvers in this folder. Command-line params arrive as
// strings, so numbers and booleans are parsed here and bad values fail the packaging early.

const MAX_KV_SHARDS = 16;
const ARCHITECTURES = {
  // Lambda architecture -> machine name in wheel platform tags, ECS CPU architecture
  x86_64: { machine: 'x86_64', ecs: 'X86_64' },
  arm64: { machine: 'aarch64', ecs: 'ARM64' },
};

const ECR_IMAGE_BY_DIGEST = /^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[a-z0-9._\/-]+@sha256:[a-f0-9]{64}$/;

function parseBool(name, value) {
  const text = String(value).toLowerCase();
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  throw new Error(`param ${name} must be true or false, got ${value}`);
}

function parseInteger(name, value, min, max) {
  const number = Number(value);
  if (!Number.isInteger(number) || number < min || number > max) {
    throw new Error(`param ${name} must be an integer from ${min} to ${max}, got ${value}`);
  }
  return number;
}

async function settings(resolveVariable) {
  const param = (name) => resolveVariable(`param:${name}`);
  const architecture = String(await param('architecture'));
  if (!ARCHITECTURES[architecture]) {
    throw new Error(`param architecture must be one of ${Object.keys(ARCHITECTURES).join(', ')}, got ${architecture}`);
  }
  const mdsArchitecture = String(await param('mdsArchitecture'));
  if (!ARCHITECTURES[mdsArchitecture]) {
    throw new Error(`param mdsArchitecture must be one of ${Object.keys(ARCHITECTURES).join(', ')}, got ${mdsArchitecture}`);
  }
  const pythonVersion = String(await param('pythonVersion'));
  if (!/^3\.(1[2-9]|[2-9][0-9])$/.test(pythonVersion)) {
    throw new Error(`param pythonVersion must be 3.12 or newer, got ${pythonVersion}`);
  }
  const kvBackend = String(await param('kvBackend'));
  if (!['fargate', 'elasticache'].includes(kvBackend)) {
    throw new Error(`param kvBackend must be fargate or elasticache, got ${kvBackend}`);
  }
  const redisTls = parseBool('redisTls', await param('redisTls'));
  if (kvBackend === 'elasticache' && !redisTls) {
    throw new Error('param kvBackend=elasticache needs redisTls=true (ElastiCache AUTH requires in-transit encryption)');
  }
  if (kvBackend === 'fargate' && redisTls) {
    throw new Error('param redisTls=true needs kvBackend=elasticache (the Fargate shards serve plain Redis protocol)');
  }
  const functionPackage = String(await param('functionPackage'));
  if (!['zip', 'image'].includes(functionPackage)) {
    throw new Error(`param functionPackage must be zip or image, got ${functionPackage}`);
  }
  const imageUri = String((await param('imageUri')) || '');
  if (imageUri && functionPackage !== 'image') {
    throw new Error('param imageUri needs functionPackage=image');
  }
  // a digest pins the image and needs no ECR call while packaging (a tag would be looked up)
  if (imageUri && !ECR_IMAGE_BY_DIGEST.test(imageUri)) {
    throw new Error(`param imageUri must be an ECR image by digest, <account>.dkr.ecr.<region>.amazonaws.com/<repository>@sha256:<64 hex>, got ${imageUri}`);
  }
  return {
    architecture,
    functionPackage,
    imageUri,
    platform: ARCHITECTURES[architecture],
    mdsPlatform: ARCHITECTURES[mdsArchitecture],
    pythonVersion,
    kvBackend,
    redisTls,
    kvShards: parseInteger('kvShards', await param('kvShards'), 1, MAX_KV_SHARDS),
    redisPort: parseInteger('redisPort', await param('redisPort'), 1024, 65535),
    proxyPort: parseInteger('proxyPort', await param('proxyPort'), 1024, 65535),
    kvProxy: parseBool('kvProxy', await param('kvProxy')),
    kvCpu: parseInteger('kvCpu', await param('kvCpu'), 256, 16384),
    kvMemory: parseInteger('kvMemory', await param('kvMemory'), 512, 122880),
    kvImage: String(await param('kvImage')),
    kvNodeType: String(await param('kvNodeType')),
    // Lambda allows 0 to 2 retries of an asynchronous invoke
    executorRetries: parseInteger('executorRetries', await param('executorRetries'), 0, 2),
    mdsMaxMemoryPercent: parseInteger('mdsMaxMemoryPercent', await param('mdsMaxMemoryPercent'), 10, 90),
  };
}

module.exports = { settings, ARCHITECTURES, MAX_KV_SHARDS, parseBool };
