#!/usr/bin/env node
// npm run demo: the three disk tools on a real image, without root.
//
//   1. cptofs makes a small ext4 image and copies this repository's
//      packages/ into it;
//   2. the TypeScript API mounts the image and lists what is there;
//   3. fs2tar exports the image to a tar archive, and tar lists it.
const { execFileSync } = require('node:child_process');
const { mkdtempSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const { openImage } = require('@lkl-um/core');

const top = join(__dirname, '..');
const tool = (name, args) =>
  execFileSync(process.execPath, [join(top, 'bin', name), ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
const bold = process.stdout.isTTY ? (s) => `\u001b[1m${s}\u001b[0m` : (s) => s;
const say = (line) => console.log(`\n${bold(line)}`);

/** Files and bytes under dir, in the kernel. */
async function usage(fs, dir) {
  let files = 0;
  let bytes = 0;
  for (const d of await fs.readdir(dir, { withFileTypes: true })) {
    const path = `${dir}/${d.name}`;
    if (d.isDirectory()) {
      const sub = await usage(fs, path);
      files += sub.files;
      bytes += sub.bytes;
    } else {
      files++;
      bytes += (await fs.lstat(path)).size;
    }
  }
  return { files, bytes };
}

async function main() {
  const work = mkdtempSync(join(tmpdir(), 'lkl-um-demo-'));
  const image = join(work, 'demo.img');
  const archive = join(work, 'demo.tar');
  try {
    say(`$ cptofs -i demo.img -t ext4 --create 64M --exclude node_modules packages /`);
    tool('cptofs', ['-i', image, '-t', 'ext4', '--create', '64M', '--exclude', 'node_modules', join(top, 'packages'), '/']);
    execFileSync('e2fsck', ['-fn', image], { stdio: 'ignore' }); // throws if the image is not clean
    console.log('done; e2fsck -fn finds the image clean');

    say('The image, as the kernel sees it (@lkl-um/core: openImage, kernel.fs):');
    const t0 = process.hrtime.bigint();
    const img = await openImage({ image, readOnly: true });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    try {
      console.log(`booted Linux and mounted ${img.disk.name} (ext4) in ${ms.toFixed(0)} ms`);
      for (const d of await img.kernel.fs.readdir(`${img.root}/packages`, { withFileTypes: true })) {
        const { files, bytes } = await usage(img.kernel.fs, `${img.root}/packages/${d.name}`);
        console.log(`  packages/${d.name.padEnd(16)} ${String(files).padStart(5)} files ${(bytes / 1024).toFixed(0).padStart(7)} KiB`);
      }
      const st = await img.kernel.fs.statfs(img.root);
      console.log(`  ${(((st.blocks - st.bfree) * st.bsize) / 1048576).toFixed(1)} MiB used of ${((st.blocks * st.bsize) / 1048576).toFixed(0)} MiB`);
    } finally {
      await img.close();
    }

    say('$ fs2tar demo.img demo.tar && tar -tvf demo.tar');
    tool('fs2tar', [image, archive]);
    const listing = execFileSync('tar', ['-tvf', archive]).toString().trim().split('\n');
    const shown = listing.filter((l) => / \.\/packages\/core\/(src\/|package\.json)/.test(l)).slice(0, 12);
    console.log(shown.join('\n'));
    console.log(`... ${listing.length} entries in all`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`demo: ${e.message}`);
  process.exit(1);
});
