// What the bench scripts share: running commands, timing them, dropping the
// host's caches, and a real source tree to copy.
const { execFileSync } = require('node:child_process');
const { closeSync, openSync, writeFileSync, writeSync } = require('node:fs');
const { randomFillSync } = require('node:crypto');
const { join } = require('node:path');

const sh = (cmd, args) =>
  execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 }).toString();

/** Seconds that fn takes. */
function time(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function dropCaches() {
  sh('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

function requireRoot(bench) {
  if (process.getuid() !== 0) throw new Error(`${bench} needs root, for the host reference (a loop mount)`);
}

/** arch/ and net/ of the kernel source, about 19k files: { dir, files, mb }. */
function sourceTree(work) {
  const source = process.env.LKL_UM_KERNEL_SRC ?? '/usr/src/linux-source-6.12.tar.xz';
  const dir = join(work, 'tree');
  sh('mkdir', [dir]);
  sh('tar', ['-xf', source, '-C', dir, '--strip-components=1', '--wildcards', '--no-wildcards-match-slash', '*/arch', '*/net']);
  return {
    dir,
    files: Number(sh('sh', ['-c', `find ${dir} -type f | wc -l`])),
    mb: Number(sh('du', ['-sm', dir]).split('\t')[0]),
  };
}

/** A directory holding one 1 GiB file of random bytes. */
function bigFile(work) {
  const dir = join(work, 'big');
  sh('mkdir', [dir]);
  const fd = openSync(join(dir, 'file'), 'w');
  const chunk = Buffer.alloc(16 << 20);
  for (let i = 0; i < 64; i++) writeSync(fd, randomFillSync(chunk));
  closeSync(fd);
  return dir;
}

module.exports = { sh, time, dropCaches, requireRoot, sourceTree, bigFile };
