#!/usr/bin/env node
// bench/boot-syscalls: what a kernel costs to start and to talk to, from C
// (bench/boot-syscalls.c, run first) and from Node, in the same run.
//
//   boot        spawn to ready, median of 20
//   round trip  await kernel.sys.getpid(), p50 and p99 of 100k
//   pipelined   getpid calls/s with 64 in flight
//   files       kernel.fs.writeFile / readFile of 256 MiB in the kernel's tmpfs
const { execFileSync } = require('node:child_process');
const { readFile, unlink, writeFile } = require('node:fs/promises');
const { join } = require('node:path');
const { Kernel } = require('@lkl-um/core');

const top = join(__dirname, '..');
const now = () => Number(process.hrtime.bigint()) / 1e3; // microseconds
const median = (a) => [...a].sort((x, y) => x - y)[a.length >> 1];
const percentile = (sorted, p) => sorted[Math.floor((sorted.length * p) / 100)];

async function main() {
  const c = execFileSync(join(top, 'build/native/bench-boot-syscalls'), {
    env: { ...process.env, LKL_UM_KERNEL: join(top, 'build/native/bin/lkl-um-kernel') },
  }).toString();
  console.log('--- C client (bench/boot-syscalls.c)\n' + c);
  const cP50 = Number(/round trip p50:\s+([\d.]+)/.exec(c)[1]);
  const cPipe = Number(/64 deep:\s+(\d+)/.exec(c)[1]);

  const boots = [];
  for (let i = 0; i < 20; i++) {
    const t0 = now();
    const k = await Kernel.boot({ memory: '64M' });
    boots.push(now() - t0);
    await k.shutdown();
  }

  const k = await Kernel.boot({ memory: '1G' });
  for (let i = 0; i < 1000; i++) await k.sys.getpid();
  const samples = new Float64Array(100000);
  for (let i = 0; i < samples.length; i++) {
    const t0 = now();
    await k.sys.getpid();
    samples[i] = now() - t0;
  }
  samples.sort();

  const calls = 1_000_000;
  let issued = 0;
  const t0 = now();
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (issued < calls) {
        issued++;
        await k.sys.getpid();
      }
    }),
  );
  const pipelined = calls / ((now() - t0) / 1e6);

  // Files: the best of three rounds, for us and for the reference alike.
  // Much of a readFile is faulting in the new buffer, which costs from
  // 0.5 to 3.5 ms per MiB on this VM, whoever does it.
  const data = Buffer.alloc(256 << 20, 0x5a);
  let writeMBs = 0;
  let readMBs = 0;
  for (let round = 0; round < 3; round++) {
    let t = now();
    await k.fs.writeFile('/big', data);
    writeMBs = Math.max(writeMBs, data.length / (now() - t));
    t = now();
    const back = await k.fs.readFile('/big');
    readMBs = Math.max(readMBs, data.length / (now() - t));
    if (!back.equals(data)) throw new Error('read back differs');
  }
  // References: the same through node:fs on the host's tmpfs, and a copy
  // into a buffer that exists already.
  const hostFile = `/dev/shm/lkl-um-bench-${process.pid}`;
  let hostWriteMBs = 0;
  let hostReadMBs = 0;
  for (let round = 0; round < 3; round++) {
    let t = now();
    await writeFile(hostFile, data);
    hostWriteMBs = Math.max(hostWriteMBs, data.length / (now() - t));
    t = now();
    await readFile(hostFile);
    hostReadMBs = Math.max(hostReadMBs, data.length / (now() - t));
  }
  await unlink(hostFile);
  const target = Buffer.alloc(data.length, 1);
  const t = now();
  data.copy(target);
  const memcpyMBs = data.length / (now() - t);
  await k.shutdown();

  const p50 = percentile(samples, 50);
  console.log('--- Node (@lkl-um/core)');
  console.log(`boot to ready (median of 20):   ${(median(boots) / 1000).toFixed(1)} ms`);
  console.log(`await sys.getpid() p50:         ${p50.toFixed(2)} us   (${(p50 / cP50).toFixed(1)}x the C round trip; aim 2x)`);
  console.log(`await sys.getpid() p99:         ${percentile(samples, 99).toFixed(2)} us`);
  console.log(`pipelined, 64 in flight:        ${Math.round(pipelined)} calls/s   (${(pipelined / cPipe * 100).toFixed(0)}% of C; aim 250k/s)`);
  console.log(`fs.writeFile 256 MiB (tmpfs):   ${writeMBs.toFixed(0)} MB/s   (host node:fs on /dev/shm: ${hostWriteMBs.toFixed(0)} MB/s)`);
  console.log(`fs.readFile 256 MiB (tmpfs):    ${readMBs.toFixed(0)} MB/s   (host node:fs on /dev/shm: ${hostReadMBs.toFixed(0)} MB/s)`);
  console.log(`reference: Buffer copy, 256 MiB ${memcpyMBs.toFixed(0)} MB/s into a buffer that exists; readFile must also fault in a new one`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
