#!/usr/bin/env node
// Compile contracts/**/*.sol (plus Chainlink's MockV3Aggregator) with the pinned npm solc
// and write contracts/artifacts/<Name>.json.
//
//   node contracts/build.js            compile and write artifacts
//   node contracts/build.js --check    exit 1 naming every artifact that no longer matches
//                                      its sources / compiler / settings (no compilation)
//   node contracts/build.js --out DIR  compile into DIR instead (used by tests to compare)
//
// sourceHash = sha256 over the compiler version, the settings and the sha256 of every
// source file the contract's unit imports (transitively), so a changed import in
// node_modules makes the artifact stale too.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const CONTRACTS_DIR = __dirname;
const ROOT = path.resolve(CONTRACTS_DIR, '..');
const NODE_MODULES = path.join(ROOT, 'node_modules');
const DEFAULT_OUT = path.join(CONTRACTS_DIR, 'artifacts');
const INDEX_FILE = 'index.json';

// Library contracts that get an artifact of their own although they live in node_modules.
const EXTRA_UNITS = ['@chainlink/contracts/src/v0.8/tests/MockV3Aggregator.sol'];

// evmVersion cancun: supported by anvil 1.7 (default hardfork prague is a superset).
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function loadSolc() {
  try {
    return require(path.join(NODE_MODULES, 'solc'));
  } catch (err) {
    console.error(`cannot load node_modules/solc (${err.message}); run \`npm ci\` first`);
    process.exit(2);
  }
}

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function ownUnits() {
  const units = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'artifacts' && entry.name !== 'node_modules') walk(full);
      } else if (entry.name.endsWith('.sol')) {
        units.push(path.relative(ROOT, full).split(path.sep).join('/'));
      }
    }
  };
  walk(CONTRACTS_DIR);
  return units;
}

// Unit names are either repo-relative (contracts/...) or package paths under node_modules.
function unitPath(unit) {
  return unit.startsWith('contracts/') ? path.join(ROOT, unit) : path.join(NODE_MODULES, unit);
}

function readUnit(unit) {
  const file = unitPath(unit);
  if (!fs.existsSync(file)) throw new Error(`source not found: ${unit} (looked at ${file})`);
  return fs.readFileSync(file, 'utf8');
}

function importsOf(unit, content) {
  const stripped = content.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
  const re = /^\s*import\s+(?:[^"';]*?\s+from\s+)?["']([^"']+)["'][^;]*;/gm;
  const out = [];
  let m;
  while ((m = re.exec(stripped)) !== null) {
    const imp = m[1];
    out.push(imp.startsWith('.') ? path.posix.normalize(path.posix.join(path.posix.dirname(unit), imp)) : imp);
  }
  return out;
}

function closure(unit) {
  const seen = new Map();
  const stack = [unit];
  while (stack.length) {
    const u = stack.pop();
    if (seen.has(u)) continue;
    const content = readUnit(u);
    seen.set(u, content);
    for (const dep of importsOf(u, content)) stack.push(dep);
  }
  return seen;
}

function sourceHash(unit, compilerVersion) {
  const files = [...closure(unit).entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([u, content]) => [u, sha256(content)]);
  return sha256(JSON.stringify({ compiler: compilerVersion, settings: SETTINGS, files }));
}

function compile(solc, units) {
  const sources = {};
  for (const unit of units) sources[unit] = { content: readUnit(unit) };
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const findImports = (p) => {
    try {
      return { contents: readUnit(p) };
    } catch (err) {
      return { error: err.message };
    }
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const w of (output.errors || []).filter((e) => e.severity !== 'error')) {
    const file = w.sourceLocation ? w.sourceLocation.file : '';
    if (file.startsWith('contracts/')) console.error(w.formattedMessage);
  }
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage);
    throw new Error(`compilation failed with ${errors.length} error(s)`);
  }
  return output;
}

function build(outDir) {
  const solc = loadSolc();
  const version = solc.version();
  const units = [...ownUnits(), ...EXTRA_UNITS];
  const output = compile(solc, units);
  fs.mkdirSync(outDir, { recursive: true });
  const index = { compiler: version, settings: SETTINGS, units: {} };
  const names = new Map();
  for (const unit of units) {
    index.units[unit] = [];
    const hash = sourceHash(unit, version);
    for (const [name, c] of Object.entries(output.contracts[unit] || {})) {
      const bytecode = c.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts
      if (names.has(name)) throw new Error(`contract name ${name} defined in both ${names.get(name)} and ${unit}`);
      names.set(name, unit);
      const artifact = {
        contractName: name,
        sourceUnit: unit,
        compiler: version,
        sourceHash: hash,
        abi: c.abi,
        bytecode: '0x' + bytecode,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
      };
      fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(artifact, null, 2) + '\n');
      index.units[unit].push(name);
    }
  }
  // Artifacts of contracts that no longer exist would otherwise linger and look valid.
  for (const file of fs.readdirSync(outDir)) {
    if (file.endsWith('.json') && file !== INDEX_FILE && !names.has(file.slice(0, -5))) {
      fs.unlinkSync(path.join(outDir, file));
      console.error(`removed obsolete artifact ${file}`);
    }
  }
  fs.writeFileSync(path.join(outDir, INDEX_FILE), JSON.stringify(index, null, 2) + '\n');
  console.log(`wrote ${names.size} artifacts to ${path.relative(process.cwd(), outDir) || '.'} (solc ${version})`);
}

function check(outDir) {
  const solc = loadSolc();
  const version = solc.version();
  const problems = [];
  const indexPath = path.join(outDir, INDEX_FILE);
  if (!fs.existsSync(indexPath)) {
    console.error(`stale: ${indexPath} missing; run node contracts/build.js`);
    return 1;
  }
  const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  const units = [...ownUnits(), ...EXTRA_UNITS];
  for (const unit of units) {
    if (!(unit in index.units)) problems.push(`${unit}: new source, never built`);
  }
  for (const [unit, names] of Object.entries(index.units)) {
    let hash = null;
    try {
      hash = units.includes(unit) ? sourceHash(unit, version) : null;
    } catch (err) {
      problems.push(`${unit}: ${err.message}`);
    }
    if (hash === null && units.includes(unit)) continue;
    for (const name of names) {
      const file = path.join(outDir, `${name}.json`);
      if (!fs.existsSync(file)) {
        problems.push(`${name}: artifact missing`);
        continue;
      }
      if (hash === null) {
        problems.push(`${name}: source ${unit} no longer exists`);
        continue;
      }
      const artifact = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (artifact.sourceHash !== hash) problems.push(`${name}: stale (sources, compiler or settings changed since build)`);
    }
  }
  if (problems.length) {
    for (const p of problems) console.error(`stale: ${p}`);
    console.error('run: node contracts/build.js');
    return 1;
  }
  console.log('artifacts up to date');
  return 0;
}

function main(argv) {
  let outDir = DEFAULT_OUT;
  let doCheck = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--check') doCheck = true;
    else if (argv[i] === '--out' && i + 1 < argv.length) outDir = path.resolve(argv[++i]);
    else {
      console.error(`unknown argument ${argv[i]}\nusage: node contracts/build.js [--check] [--out DIR]`);
      return 2;
    }
  }
  if (doCheck) return check(outDir);
  try {
    build(outDir);
  } catch (err) {
    console.error(err.message);
    return 1;
  }
  return 0;
}

process.exitCode = main(process.argv.slice(2));
