#!/usr/bin/env node
// bench/cptofs: cptofs against the host kernel and mke2fs -d, in one run,
// on ext4 images:
//
//   a source tree: arch/ and net/ of the kernel source (about 19k files)
//   one 1 GiB file
//
//   cptofs           node bin/cptofs -i IMAGE SOURCE /   (boot to shutdown)
//   host kernel      mount -o loop, cp -a, sync, umount  (as root)
//   mke2fs -d        mkfs.ext4 -d SOURCE                 (makes the filesystem too)
const { execFileSync } = require('node:child_process');
const { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } = require('node:fs');
const { randomFillSync } = require('node:crypto');
const { tmpdir } = require('node:os');
const { join } = require('node:path');

const top = join(__dirname, '..');
const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 }).toString();
const time = (fn) => {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
};
const source = process.env.LKL_UM_KERNEL_SRC ?? '/usr/src/linux-source-6.12.tar.xz';

function freshImage(image, size) {
  rmSync(image, { force: true });
  writeFileSync(image, '');
  sh('truncate', ['-s', size, image]);
}

function measure(work, src, size) {
  const image = join(work, 'bench.img');
  const mnt = join(work, 'mnt');
  sh('mkdir', ['-p', mnt]);
  const dropCaches = () => (sh('sync', []), writeFileSync('/proc/sys/vm/drop_caches', '3'));

  freshImage(image, size);
  sh('mkfs.ext4', ['-q', '-F', image]);
  dropCaches();
  const cptofs = time(() => sh(process.execPath, [join(top, 'bin/cptofs'), '-q', '-i', image, src, '/']));
  sh('e2fsck', ['-fn', image]);

  freshImage(image, size);
  sh('mkfs.ext4', ['-q', '-F', image]);
  dropCaches();
  const host = time(() => {
    sh('mount', ['-o', 'loop', image, mnt]);
    sh('cp', ['-a', src, mnt]);
    sh('sync', []);
    sh('umount', [mnt]);
  });

  freshImage(image, size);
  dropCaches();
  const mke2fs = time(() => sh('mkfs.ext4', ['-q', '-F', '-d', src, image]));
  return { cptofs, host, mke2fs };
}

function main() {
  if (process.getuid() !== 0) throw new Error('bench/cptofs needs root, for the host reference (a loop mount)');
  const work = mkdtempSync(join(tmpdir(), 'lkl-um-bench-cptofs-'));
  try {
    const tree = join(work, 'tree');
    sh('mkdir', [tree]);
    sh('tar', ['-xf', source, '-C', tree, '--strip-components=1', '--wildcards', '--no-wildcards-match-slash', '*/arch', '*/net']);
    const files = Number(sh('sh', ['-c', `find ${tree} -type f | wc -l`]));
    const mb = Number(sh('du', ['-sm', tree]).split('\t')[0]);
    const t = measure(work, tree, '2G');

    const big = join(work, 'big');
    sh('mkdir', [big]);
    const fd = openSync(join(big, 'file'), 'w');
    const chunk = Buffer.alloc(16 << 20);
    for (let i = 0; i < 64; i++) writeSync(fd, randomFillSync(chunk));
    closeSync(fd);
    const b = measure(work, big, '2G');

    const line = (what, r, unit) =>
      console.log(
        `${what.padEnd(30)} cptofs ${r.cptofs.toFixed(2)} s   host kernel ${r.host.toFixed(2)} s (${(r.cptofs / r.host).toFixed(2)}x)   mke2fs -d ${r.mke2fs.toFixed(2)} s (${(r.cptofs / r.mke2fs).toFixed(2)}x)${unit(r)}`,
      );
    console.log('ext4 images; times include boot and shutdown for cptofs, mount/sync/umount for the host');
    line(`tree: ${files} files, ${mb} MB`, t, () => '');
    line('one 1 GiB file', b, (r) => `   throughput ${(1024 / r.cptofs).toFixed(0)} vs ${(1024 / r.host).toFixed(0)} MB/s (${((r.host / r.cptofs) * 100).toFixed(0)}%)`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main();
