#!/usr/bin/env node
// bench/fs2tar: fs2tar against GNU tar over a loop mount of the same image
// (as root), in one run, on ext4 images holding
//
//   a source tree: arch/ and net/ of the kernel source (about 19k files)
//   one 1 GiB file
//
// Both write the archive to /dev/null (GNU tar: -f - | cat >/dev/null, so
// it cannot skip the reading); caches are dropped before each run.
const { mkdtempSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { sh, time, dropCaches, requireRoot, sourceTree, bigFile } = require('./lib');

const top = join(__dirname, '..');

function measure(work, content) {
  const image = join(work, 'bench.img');
  rmSync(image, { force: true });
  writeFileSync(image, '');
  sh('truncate', ['-s', '2G', image]);
  sh('mkfs.ext4', ['-q', '-F', '-d', content, image]);
  const mnt = join(work, 'mnt');
  sh('mkdir', ['-p', mnt]);

  dropCaches();
  const ours = time(() => sh('sh', ['-c', `${process.execPath} ${join(top, 'bin/fs2tar')} -q ${image} - > /dev/null`]));
  dropCaches();
  const host = time(() => {
    sh('mount', ['-o', 'loop,ro', image, mnt]);
    sh('sh', ['-c', `tar --xattrs --acls --numeric-owner --sort=name -C ${mnt} -cf - . | cat > /dev/null`]);
    sh('umount', [mnt]);
  });
  return { ours, host };
}

function main() {
  requireRoot('bench/fs2tar');
  const work = mkdtempSync(join(tmpdir(), 'lkl-um-bench-fs2tar-'));
  try {
    const { dir: tree, files, mb } = sourceTree(work);
    const t = measure(work, tree);

    const big = bigFile(work);
    const b = measure(work, big);

    console.log('ext4 images; fs2tar from its start to its exit; GNU tar with the loop mount and umount');
    const line = (what, r) =>
      console.log(`${what.padEnd(30)} fs2tar ${r.ours.toFixed(2)} s   GNU tar over a loop mount ${r.host.toFixed(2)} s   ratio ${(r.ours / r.host).toFixed(2)}x`);
    line(`tree: ${files} files, ${mb} MB`, t);
    line('one 1 GiB file', b);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main();
