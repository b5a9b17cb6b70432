'use strict';
// Loads statemachine/wukong.asl.json for serverless-step-functions.
//
// The ASL file keeps CloudFormation DefinitionSubstitutions placeholders such as
// "${PlannerFunctionArn}" so that tests can substitute ARNs themselves and use it verbatim.
// serverless-step-functions has no `definitionSubstitutions` option, so this resolver does the
// substitution at package time: a string that is exactly "${<Name>FunctionArn}" becomes
// {"Fn::GetAtt": ["<Name>LambdaFunction", "Arn"]}. The plugin turns those into static ARNs
// inside an Fn::Sub (no dependency cycle), so every other "${" in the definition (comments,
// for example) is escaped as "${!", which Fn::Sub renders back as a literal "${".
//
// An unknown placeholder, or a placeholder naming a function serverless.yml does not define,
// fails the packaging instead of reaching AWS.
const fs = require('fs');
const path = require('path');

const ASL_FILE = path.join(__dirname, '..', 'statemachine', 'wukong.asl.json');
const PLACEHOLDER = /^\$\{([A-Z][A-Za-z0-9]*)FunctionArn\}$/;

// serverless v3's logical id for a function key: first letter upper-cased, '-' and '_' spelled out
function lambdaLogicalId(functionKey) {
  const normalized = functionKey.charAt(0).toUpperCase() + functionKey.slice(1);
  return `${normalized.replace(/-/g, 'Dash').replace(/_/g, 'Underscore')}LambdaFunction`;
}

function substitute(value, functionKeys, used) {
  if (Array.isArray(value)) return value.map((item) => substitute(item, functionKeys, used));
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, substitute(item, functionKeys, used)]),
    );
  }
  if (typeof value !== 'string') return value;
  const match = PLACEHOLDER.exec(value);
  if (match) {
    const key = match[1].charAt(0).toLowerCase() + match[1].slice(1);
    if (!functionKeys.includes(key)) {
      throw new Error(`${ASL_FILE}: ${value} names no function in serverless.yml (have: ${functionKeys.join(', ')})`);
    }
    used.add(key);
    return { 'Fn::GetAtt': [lambdaLogicalId(key), 'Arn'] };
  }
  if (/\$\{[A-Za-z0-9]+FunctionArn\}/.test(value)) {
    throw new Error(`${ASL_FILE}: placeholder inside a longer string is not supported: ${value}`);
  }
  return value.replace(/\$\{(?!!)/g, '${!');
}

function loadDefinition(functionKeys) {
  const definition = JSON.parse(fs.readFileSync(ASL_FILE, 'utf8'));
  const used = new Set();
  const result = substitute(definition, functionKeys, used);
  return { definition: result, used: [...used].sort() };
}

module.exports = async ({ resolveConfigurationProperty }) => {
  const functions = (await resolveConfigurationProperty(['functions'])) || {};
  return loadDefinition(Object.keys(functions)).definition;
};
module.exports.loadDefinition = loadDefinition;
module.exports.lambdaLogicalId = lambdaLogicalId;
