#!/usr/bin/env node
// npm run pack [-- OUTDIR]: the npm tarballs of every package, to publish or
// to install from files (default OUTDIR: build/npm).  The platform package
// @lkl-um/linux-x64-gnu gets this build's native parts first, stripped of
// their debug information.
const { execFileSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } = require('node:fs');
const { join, resolve } = require('node:path');

const top = join(__dirname, '..');
const built = join(top, 'build/native/bin');
const platformBin = join(top, 'packages/linux-x64-gnu/bin');
const NATIVE = ['lkl-um-kernel', 'lkl_um.node', 'lklfuse-server'];

function main() {
  const out = resolve(process.argv[2] ?? join(top, 'build/npm'));
  for (const name of NATIVE) {
    if (!existsSync(join(built, name))) {
      throw new Error(`${join(built, name)} is missing: run npm run build first` +
        (name === 'lklfuse-server' ? ' (with libfuse3-dev installed)' : ''));
    }
  }
  rmSync(platformBin, { recursive: true, force: true });
  mkdirSync(platformBin, { recursive: true });
  for (const name of NATIVE) {
    copyFileSync(join(built, name), join(platformBin, name));
    execFileSync('strip', ['--strip-debug', join(platformBin, name)]);
  }

  mkdirSync(out, { recursive: true });
  const before = new Set(readdirSync(out));
  execFileSync('npm', ['pack', '--workspaces', '--pack-destination', out, '--silent'], { cwd: top, stdio: ['ignore', 'ignore', 'inherit'] });
  const made = readdirSync(out).filter((f) => f.endsWith('.tgz'));
  for (const f of made) console.log(`${before.has(f) ? 'updated' : 'made'} ${join(out, f)}`);
}

try {
  main();
} catch (e) {
  process.stderr.write(`pack: ${e.message}\n`);
  process.exit(2);
}
