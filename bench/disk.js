#!/usr/bin/env node
// bench/disk: disk throughput through kernel.fs on an ext4 image, against
// the host kernel on the same image through a loop mount (as root), in one
// run.
//
//   sequential write of a 1 GiB file, fsync included
//   sequential read of it, caches dropped (a fresh mount on both sides)
//   4 KiB random reads, 16 in flight, for 3 seconds
//
// Both sides read and write through the host's page cache of the image
// file: that is what an image tool works with.  The host's own writeback
// makes single runs vary by 2x here, so each side runs ROUNDS times,
// alternating, and the best of each figure counts.
const { execFileSync } = require('node:child_process');
const { mkdtempSync, openSync, closeSync, rmSync, writeFileSync } = require('node:fs');
const fsp = require('node:fs/promises');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { Kernel } = require('@lkl-um/core');

const FILE = 1 << 30;
const CHUNK = 16 << 20;
const RANDOM_SECONDS = 3;
const DEPTH = 16;
const ROUNDS = 3;
const now = () => Number(process.hrtime.bigint()) / 1e9;
const sh = (cmd, args) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] }).toString();

function dropHostCaches() {
  sh('sync', []);
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/* The three figures through one filesystem API: fs.open etc. */
async function measure(fs, dir, remount) {
  const data = Buffer.alloc(CHUNK, 0x5a);
  let t = now();
  let fh = await fs.open(`${dir}/big`, 'w');
  for (let at = 0; at < FILE; at += CHUNK) await fh.write(data, 0, CHUNK, at);
  await fh.sync();
  await fh.close();
  const write = FILE / (now() - t) / 1e6;

  await remount();
  const buf = Buffer.alloc(CHUNK);
  t = now();
  fh = await fs.open(`${dir}/big`, 'r');
  for (let at = 0; at < FILE; at += CHUNK) await fh.read(buf, 0, CHUNK, at);
  await fh.close();
  const read = FILE / (now() - t) / 1e6;

  await remount();
  fh = await fs.open(`${dir}/big`, 'r');
  let ops = 0;
  const until = now() + RANDOM_SECONDS;
  await Promise.all(
    Array.from({ length: DEPTH }, async () => {
      const b = Buffer.alloc(4096);
      while (now() < until) {
        await fh.read(b, 0, 4096, Math.floor(Math.random() * (FILE / 4096)) * 4096);
        ops++;
      }
    }),
  );
  await fh.close();
  return { write, read, iops: ops / RANDOM_SECONDS };
}

async function main() {
  if (process.getuid() !== 0) throw new Error('bench/disk needs root, for the host reference (a loop mount)');
  const work = mkdtempSync(join(tmpdir(), 'lkl-um-bench-'));
  const image = join(work, 'disk.img');
  closeSync(openSync(image, 'w'));
  sh('truncate', ['-s', '3G', image]);
  sh('mkfs.ext4', ['-q', '-F', image]);

  const best = (a, b) => (a ? { write: Math.max(a.write, b.write), read: Math.max(a.read, b.read), iops: Math.max(a.iops, b.iops) } : b);
  let ours;
  let host;
  const mnt = join(work, 'mnt');
  sh('mkdir', [mnt]);
  try {
    for (let round = 0; round < ROUNDS; round++) {
      // lkl-um: the kernel's ext4, through kernel.fs.
      const k = await Kernel.boot({ memory: '512M' });
      const disk = await k.addDisk(image);
      let target = await k.mount(disk);
      ours = best(ours, await measure(k.fs, target, async () => {
        await k.umount(target);
        dropHostCaches();
        target = await k.mount(disk);
      }));
      await k.fs.unlink(`${target}/big`);
      await k.umount(target);
      await disk.remove();
      await k.shutdown();

      // The host kernel: a loop mount of the same image, through node:fs.
      sh('mount', ['-o', 'loop', image, mnt]);
      try {
        host = best(host, await measure(fsp, mnt, async () => {
          sh('umount', [mnt]);
          dropHostCaches();
          sh('mount', ['-o', 'loop', image, mnt]);
        }));
        await fsp.unlink(`${mnt}/big`);
      } finally {
        sh('umount', [mnt]);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }

  const row = (name, a, b, unit) =>
    console.log(`${name.padEnd(34)} ${a.toFixed(0).padStart(8)} ${unit}   host ${b.toFixed(0).padStart(8)} ${unit}   ${((a / b) * 100).toFixed(0)}%`);
  console.log(`ext4 image, 1 GiB file, ${CHUNK >> 20} MiB calls, best of ${ROUNDS}; lkl-um kernel.fs vs host kernel (loop mount, node:fs)`);
  row('sequential write (with fsync)', ours.write, host.write, 'MB/s');
  row('sequential read (cold mount)', ours.read, host.read, 'MB/s');
  row(`4 KiB random read, ${DEPTH} in flight`, ours.iops, host.iops, 'IOPS');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
