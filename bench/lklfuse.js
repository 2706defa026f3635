#!/usr/bin/env node
// bench/lklfuse: an ext4 image mounted three ways, measured in one run:
//
//   lklfuse        node bin/lklfuse IMAGE MNT        (FUSE, the kernel's ext4 in lkl-um)
//   fuse2fs        fuse2fs IMAGE MNT                 (FUSE, e2fsprogs' libext2fs)
//   host kernel    mount -o loop IMAGE MNT           (the reference, as root)
//
// and for each:
//
//   sequential write of a 1 GiB file (dd bs=1M, conv=fsync, from a source in
//     the host's cache), then read back
//     after a remount, so that no cache of any of them holds it, and read
//     again after another remount with the image in the host's page cache
//     (the host itself then reads from its own cache: a ceiling);
//   10k small files (100 bytes, in 100 directories): create, stat, remove,
//     in ops/s;
//   cp -a of a real source tree (arch/ and net/ of the kernel source),
//     until unmounted, i.e. until the image holds it.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { sh, time, dropCaches, requireRoot, sourceTree, bigFile } = require('./lib');

const top = join(__dirname, '..');
const SMALL_FILES = 10000;

function waitGone(pid) {
  while (spawnSync('kill', ['-0', String(pid)]).status === 0) spawnSync('sleep', ['0.05']);
}

/* An ordinary user (nobody), for the FUSE contenders' reads as one. */
const NOBODY = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
const as = (user, cmd, args) => (user ? sh(NOBODY[0], [...NOBODY.slice(1), cmd, ...args]) : sh(cmd, args));

/* How to mount and unmount (as root, or as an ordinary user); unmount() returns once the image is complete. */
const contenders = {
  lklfuse: (image, mnt, user = false) => {
    const lock = `${image}.lock`;
    if (user) fs.writeFileSync(lock, '');
    if (user) fs.chownSync(lock, 65534, 65534);
    as(user, process.execPath, [join(top, 'bin/lklfuse'), '-o', `lock=${lock}`, image, mnt]);
    return () => {
      as(user, 'fusermount3', ['-u', mnt]);
      sh('flock', [lock, 'true']); // the kernel process has exited
    };
  },
  fuse2fs: (image, mnt, user = false) => {
    as(user, 'fuse2fs', [image, mnt]);
    const pid = sh('pgrep', ['-f', `fuse2fs ${image}`]).trim();
    return () => {
      as(user, 'fusermount3', ['-u', mnt]);
      waitGone(pid);
    };
  },
  host: (image, mnt) => {
    sh('mount', ['-o', 'loop', image, mnt]);
    return () => sh('umount', [mnt]);
  },
};

function freshImage(image) {
  fs.rmSync(image, { force: true });
  sh('truncate', ['-s', '3G', image]);
  sh('mkfs.ext4', ['-q', '-F', image]);
}

function measure(name, work, big, tree) {
  const mount = contenders[name];
  const image = join(work, `${name}.img`);
  const mnt = join(work, `mnt-${name}`);
  fs.mkdirSync(mnt, { recursive: true });
  const r = {};

  // Sequential I/O.
  freshImage(image);
  let unmount = mount(image, mnt);
  dropCaches();
  // The source in the host's cache: the time is the file system's, not
  // that of reading the source from this machine's disk (first reads of
  // fresh pages are slow on this VM, whoever writes them).
  sh('dd', [`if=${big}`, 'of=/dev/null', 'bs=1M', 'status=none']);
  r.write = 1024 / time(() => sh('dd', [`if=${big}`, `of=${mnt}/file`, 'bs=1M', 'conv=fsync', 'status=none']));
  unmount();
  dropCaches();
  unmount = mount(image, mnt);
  r.read = 1024 / time(() => sh('dd', [`if=${mnt}/file`, 'of=/dev/null', 'bs=1M', 'status=none']));
  // Again with the image in the host's page cache (for the host, in the
  // loop device's): the stack's own cost, without the disk. The cold read
  // does not leave it there for lklfuse, whose large reads of what the
  // host has not cached go around the host's cache.
  unmount();
  unmount = mount(image, mnt);
  sh('dd', [`if=${name === 'host' ? `${mnt}/file` : image}`, 'of=/dev/null', 'bs=1M', 'status=none']);
  r.readCached = 1024 / time(() => sh('dd', [`if=${mnt}/file`, 'of=/dev/null', 'bs=1M', 'status=none']));
  unmount();
  // Cold again, mounted by an ordinary user (FUSE's read-ahead stays at
  // 128 KiB: only root may widen it). The host's loop mount needs root.
  if (name !== 'host') {
    for (const path of [image, mnt]) fs.chownSync(path, 65534, 65534);
    dropCaches();
    unmount = mount(image, mnt, true);
    r.readUser = 1024 / time(() => as(true, 'dd', [`if=${mnt}/file`, 'of=/dev/null', 'bs=1M', 'status=none']));
    unmount();
    for (const path of [image, mnt]) fs.chownSync(path, 0, 0);
  }
  unmount = mount(image, mnt);
  fs.unlinkSync(`${mnt}/file`);

  // Small files.
  const names = [];
  for (let d = 0; d < 100; d++) {
    fs.mkdirSync(join(mnt, `d${d}`));
    for (let f = 0; f < SMALL_FILES / 100; f++) names.push(join(mnt, `d${d}`, `f${f}`));
  }
  const body = Buffer.alloc(100, 'x');
  r.create = SMALL_FILES / time(() => names.forEach((n) => fs.writeFileSync(n, body)));
  unmount();
  unmount = mount(image, mnt); // cold: stat goes to the filesystem
  r.stat = SMALL_FILES / time(() => names.forEach((n) => fs.statSync(n)));
  r.remove = SMALL_FILES / time(() => names.forEach((n) => fs.unlinkSync(n)));
  unmount();

  // A source tree, until the image holds it.
  freshImage(image);
  dropCaches();
  r.cp = time(() => {
    const done = mount(image, mnt);
    sh('cp', ['-a', tree, mnt]);
    done();
  });
  sh('e2fsck', ['-fn', image]);
  fs.rmSync(image);
  return r;
}

/*
 * What the disk itself reads, around the host's cache: four readers of
 * 1 MiB O_DIRECT requests, a quarter of @file each.  A reference for cold
 * reads, not a hard ceiling: the host's own read-ahead queues deeper.
 */
function diskRead(file) {
  dropCaches();
  const quarter = (i) => `dd if=${file} of=/dev/null bs=1M iflag=direct skip=${i * 256} count=256 status=none`;
  return 1024 / time(() => sh('sh', ['-c', `${[0, 1, 2, 3].map(quarter).join(' & ')} & wait`]));
}

/*
 * Cold reads again, in pairs: the disk's speed moves from minute to minute
 * here (1.3 to 3 GB/s for the same fio job), and fuse2fs's with it, so a
 * ratio means most when both reads come within seconds of each other.
 * One image holds the file; each round reads it through every contender,
 * in an order that turns from round to round, and the disk's four readers
 * read a copy.  Returns each round's figures.
 */
function pairedColdReads(work, big, rounds) {
  const image = join(work, 'paired.img');
  const mnt = join(work, 'mnt-paired');
  const copy = join(work, 'disk-read');
  fs.mkdirSync(mnt, { recursive: true });
  freshImage(image);
  let unmount = contenders.host(image, mnt);
  sh('cp', [big, `${mnt}/file`]);
  unmount();
  sh('cp', [big, copy]);
  const names = Object.keys(contenders);
  const all = [];
  for (let i = 0; i < rounds; i++) {
    const round = { disk: diskRead(copy) };
    for (let j = 0; j < names.length; j++) {
      const name = names[(i + j) % names.length];
      dropCaches();
      unmount = contenders[name](image, mnt);
      round[name] = 1024 / time(() => sh('dd', [`if=${mnt}/file`, 'of=/dev/null', 'bs=1M', 'status=none']));
      unmount();
    }
    all.push(round);
  }
  fs.rmSync(image);
  fs.rmSync(copy);
  return all;
}

/* The host writing a plain file on the same disk, as the bench's write does. */
function diskWrite(work, big) {
  const file = join(work, 'disk-write');
  dropCaches();
  sh('dd', [`if=${big}`, 'of=/dev/null', 'bs=1M', 'status=none']);
  const mbs = 1024 / time(() => sh('dd', [`if=${big}`, `of=${file}`, 'bs=1M', 'conv=fsync', 'status=none']));
  fs.rmSync(file);
  return mbs;
}

function main() {
  requireRoot('bench/lklfuse');
  const work = fs.mkdtempSync(join(process.env.LKL_UM_BENCH_TMP ?? tmpdir(), 'lkl-um-bench-lklfuse-'));
  fs.chmodSync(work, 0o755); // the ordinary user's mounts are in it
  try {
    const { dir: tree, files, mb } = sourceTree(work);
    const big = join(bigFile(work), 'file');
    // Rounds alternate between the contenders, and each figure is the
    // median of its rounds: single runs on this kind of machine vary by up
    // to 2x (the host's own writeback, where the scheduler puts whom).
    const rounds = Number(process.env.LKL_UM_BENCH_ROUNDS ?? 3);
    const all = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
    const disk = [];
    const plainWrite = [];
    const diskCopy = join(work, 'disk-read');
    sh('cp', [big, diskCopy]);
    for (let i = 0; i < rounds; i++) {
      for (const name of Object.keys(contenders)) all[name].push(measure(name, work, big, tree));
      disk.push(diskRead(diskCopy));
      plainWrite.push(diskWrite(work, big));
    }
    fs.rmSync(diskCopy);
    const paired = pairedColdReads(work, big, Number(process.env.LKL_UM_BENCH_READ_ROUNDS ?? 9));
    const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const results = Object.fromEntries(
      Object.entries(all).map(([name, runs]) => [
        name,
        Object.fromEntries(Object.keys(runs[0]).map((key) => [key, median(runs.map((r) => r[key]))])),
      ]),
    );

    const { lklfuse: l, fuse2fs: f, host: h } = results;
    const row = (what, key, unit, higherIsBetter = true) => {
      const ratio = (a, b) => (higherIsBetter ? a / b : b / a).toFixed(2);
      const fmt = (v) => `${v.toFixed(unit === 's' ? 2 : 0)} ${unit}`.padStart(13);
      console.log(
        `${what.padEnd(34)} lklfuse ${fmt(l[key])}  fuse2fs ${fmt(f[key])}  host ${fmt(h[key])}` +
          `   lklfuse/fuse2fs ${ratio(l[key], f[key])}x   lklfuse/host ${ratio(l[key], h[key])}x`,
      );
    };
    console.log(`ext4, 3 GiB image, median of ${rounds} rounds; ratios: how many times faster lklfuse is (below 1: slower)`);
    row('sequential write, 1 GiB', 'write', 'MB/s');
    console.log(
      `${'  the host, a plain file'.padEnd(34)} ${`${median(plainWrite).toFixed(0)} MB/s`.padStart(13)}` +
        '   (a reference: no file system above the host\'s)',
    );
    row('sequential read, 1 GiB', 'read', 'MB/s');
    row('  the same, image in host cache', 'readCached', 'MB/s');
    console.log(
      `${'  cold, as an ordinary user'.padEnd(34)} lklfuse ${`${l.readUser.toFixed(0)} MB/s`.padStart(13)}  ` +
        `fuse2fs ${`${f.readUser.toFixed(0)} MB/s`.padStart(13)}   lklfuse/fuse2fs ${(l.readUser / f.readUser).toFixed(2)}x`,
    );
    console.log(
      `${'  the disk, 4 O_DIRECT readers'.padEnd(34)} ${`${median(disk).toFixed(0)} MB/s`.padStart(13)}` +
        '   (a reference for cold reads)',
    );
    const ratios = paired.map((r) => r.lklfuse / r.fuse2fs).sort((a, b) => a - b);
    const pairedMedian = (key) => `${median(paired.map((r) => r[key])).toFixed(0)} MB/s`;
    console.log(
      `${'  cold, paired, median'.padEnd(34)} lklfuse ${pairedMedian('lklfuse').padStart(13)}  ` +
        `fuse2fs ${pairedMedian('fuse2fs').padStart(13)}  host ${pairedMedian('host').padStart(13)}` +
        `   lklfuse/fuse2fs ${median([...ratios]).toFixed(2)}x` +
        ` (${ratios[0].toFixed(2)}-${ratios[ratios.length - 1].toFixed(2)}x in ${ratios.length} rounds)` +
        `   the disk's 4 readers ${pairedMedian('disk')}`,
    );
    for (const r of paired) {
      console.log(
        `${''.padEnd(36)}${['lklfuse', 'fuse2fs', 'host', 'disk'].map((k) => `${k} ${r[k].toFixed(0)}`).join('  ')}` +
          `   ${(r.lklfuse / r.fuse2fs).toFixed(2)}x`,
      );
    }
    row(`create ${SMALL_FILES} small files`, 'create', 'ops/s');
    row(`stat ${SMALL_FILES} small files (cold)`, 'stat', 'ops/s');
    row(`remove ${SMALL_FILES} small files`, 'remove', 'ops/s');
    row(`cp -a tree: ${files} files, ${mb} MB`, 'cp', 's', false);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main();
