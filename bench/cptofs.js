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
const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { sh, time, dropCaches, requireRoot, sourceTree, bigFile } = require('./lib');

const top = join(__dirname, '..');

function freshImage(image, size) {
  rmSync(image, { force: true });
  writeFileSync(image, '');
  sh('truncate', ['-s', size, image]);
}

function measure(work, src, size) {
  const image = join(work, 'bench.img');
  const mnt = join(work, 'mnt');
  sh('mkdir', ['-p', mnt]);
  
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
  requireRoot('bench/cptofs');
  const work = mkdtempSync(join(tmpdir(), 'lkl-um-bench-cptofs-'));
  try {
    const { dir: tree, files, mb } = sourceTree(work);
    const t = measure(work, tree, '2G');

    const big = bigFile(work);
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
