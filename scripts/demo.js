#!/usr/bin/env node
// npm run demo: boot a kernel, put this repository's packages/ into its
// tmpfs through kernel.fs, list what is there, and shut down.
const { readdir, readFile, stat } = require('node:fs/promises');
const { join, relative } = require('node:path');
const { Kernel } = require('@lkl-um/core');

async function* walk(dir) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.name === 'node_modules') continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) yield* walk(path);
    else if (entry.isFile()) yield path;
  }
}

async function main() {
  const t0 = process.hrtime.bigint();
  const k = await Kernel.boot({ memory: '256M' });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`booted Linux in ${ms.toFixed(1)} ms (kernel process pid ${k.pid}; inside, we are pid ${await k.sys.getpid()})`);

  const top = join(__dirname, '..');
  let files = 0;
  let bytes = 0;
  for await (const path of walk(join(top, 'packages'))) {
    const inside = '/demo/' + relative(top, path);
    await k.fs.mkdir(inside.slice(0, inside.lastIndexOf('/')), { recursive: true });
    const data = await readFile(path);
    await k.fs.writeFile(inside, data, { mode: (await stat(path)).mode & 0o777 });
    files++;
    bytes += data.length;
  }
  console.log(`copied ${files} files (${bytes} bytes) of packages/ into the kernel's tmpfs at /demo`);

  console.log('\n/demo/packages/core, as the kernel sees it:');
  for (const d of await k.fs.readdir('/demo/packages/core', { withFileTypes: true })) {
    const st = await k.fs.lstat(`/demo/packages/core/${d.name}`);
    const kind = d.isDirectory() ? 'd' : '-';
    console.log(`  ${kind}${(st.mode & 0o777).toString(8)}  ${String(st.size).padStart(8)}  ${d.name}`);
  }
  const fsinfo = await k.fs.statfs('/demo');
  console.log(`\ntmpfs: ${((fsinfo.blocks - fsinfo.bfree) * fsinfo.bsize / 1024).toFixed(0)} KiB used`);
  await k.shutdown();
  console.log('shut down cleanly');
}

main().catch((e) => {
  console.error(`demo: ${e.message}`);
  process.exit(1);
});
