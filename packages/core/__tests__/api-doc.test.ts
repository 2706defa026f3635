// docs/api.md stays true: every ```js example in it runs, as a script of its
// own against the built packages, and prints what its `// => ...` comments
// say ('...' stands for anything).  An example without `async function
// main` runs inside one, as the page has it: Kernel required, and a kernel
// booted as `k` when it uses one.  The images the page names are made here
// by the real tools.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { isRoot, run, tempDir } from './helpers/images';

const top = join(__dirname, '../../..');
const page = fs.readFileSync(join(top, 'docs/api.md'), 'utf8');

interface Example {
  heading: string;
  line: number;
  body: string;
}

function examples(): Example[] {
  const found: Example[] = [];
  const lines = page.split('\n');
  let heading = '(top)';
  for (let i = 0; i < lines.length; i++) {
    const h = /^#+\s+(.*)/.exec(lines[i]!);
    if (h) heading = h[1]!;
    if (lines[i]!.trim() !== '```js') continue;
    const line = i + 1;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i]!.trim() !== '```'; i++) body.push(lines[i]!);
    found.push({ heading, line, body: body.join('\n') });
  }
  return found;
}

function script(body: string): string {
  if (/async function main/.test(body)) return body;
  const kernel = /\bk\./.test(body) && !/\bconst k\b/.test(body);
  return [
    "const { Kernel } = require('@lkl-um/core');",
    'async function main() {',
    ...(kernel ? ['  const k = await Kernel.boot();'] : []),
    body,
    ...(kernel && !/\bk\.shutdown\(\)/.test(body) ? ['  await k.shutdown();'] : []),
    '}',
    'main().catch((e) => { console.error(e); process.exitCode = 1; });',
  ].join('\n');
}

/* What the page says the examples have at hand: disk.img, parts.img, rootfs/, mnt/. */
function makeFiles(dir: string): void {
  const stage = join(dir, 'stage');
  for (const d of ['etc', 'run', 'var/log']) fs.mkdirSync(join(stage, d), { recursive: true });
  fs.writeFileSync(join(stage, 'etc/hostname'), 'demo\n');
  fs.writeFileSync(join(stage, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(join(stage, 'etc/group'), 'root:x:0:\n');
  fs.writeFileSync(join(stage, 'var/log/syslog'), 'booted\n');
  fs.symlinkSync('/run', join(stage, 'var/run'));
  const disk = join(dir, 'disk.img');
  fs.writeFileSync(disk, '');
  fs.truncateSync(disk, 64 << 20);
  run('mkfs.ext4', ['-q', '-F', '-d', stage, disk]);
  fs.rmSync(stage, { recursive: true });

  // GPT: a 32 MiB vfat partition from sector 2048, an ext4 one after it.
  const parts = join(dir, 'parts.img');
  fs.writeFileSync(parts, '');
  fs.truncateSync(parts, 128 << 20);
  run('sfdisk', ['-q', parts], { input: 'label: gpt\n,32M,U\n,,L\n' });
  const partition = (name: string, sectors: number, mkfs: string[], start: number) => {
    const file = join(dir, name);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, sectors * 512);
    run(mkfs[0]!, [...mkfs.slice(1), file]);
    run('dd', [`if=${file}`, `of=${parts}`, 'bs=512', `seek=${start}`, 'conv=notrunc', 'status=none']);
    fs.rmSync(file);
  };
  partition('p1.img', 65536, ['mkfs.vfat'], 2048);
  partition('p2.img', 192512, ['mkfs.ext4', '-q', '-F'], 67584);

  fs.mkdirSync(join(dir, 'rootfs/etc'), { recursive: true });
  fs.mkdirSync(join(dir, 'rootfs/build'));
  fs.writeFileSync(join(dir, 'rootfs/etc/motd'), 'hello\n');
  fs.writeFileSync(join(dir, 'rootfs/etc/app.conf'), 'x=1\n');
  fs.writeFileSync(join(dir, 'rootfs/build/main.o'), 'obj\n');
  fs.mkdirSync(join(dir, 'mnt'));
}

/* Each `console.log(...) // => what` line's what, found in the output in order. */
function unmet(body: string, stdout: string): string[] {
  const out = stdout.replace(/\s+/g, ' ');
  const missing: string[] = [];
  let at = 0;
  for (const line of body.split('\n')) {
    const said = /console\.log\(.*\/\/ => (.*)$/.exec(line);
    if (!said) continue;
    const want = said[1]!.trim().replace(/\s+/g, ' ');
    const pattern = new RegExp(want.split('...').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*?'));
    const found = pattern.exec(out.slice(at));
    if (found) at += found.index + found[0].length;
    else missing.push(want);
  }
  return missing;
}

let work: string;

beforeAll(() => {
  if (!isRoot()) throw new Error('some examples mount images with lklfuse and the host: run as root');
  work = tempDir('lkl-um-api-doc-');
});

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

const all = examples();

test('the page has its examples, each printing what it shows', () => {
  expect(all.length).toBeGreaterThan(20);
  for (const e of all) if (/console\.log\(/.test(e.body)) expect(`${e.line}: ${e.body}`).toMatch(/\/\/ => /);
});

test.each(all.map((e, i) => [i + 1, e.heading, e] as const))('example %i (%s) runs and prints what the page says', (n, _heading, e) => {
  const dir = join(work, String(n));
  fs.mkdirSync(dir);
  makeFiles(dir);
  fs.writeFileSync(join(dir, 'example.js'), script(e.body));
  const r = spawnSync('timeout', ['120', process.execPath, 'example.js'], {
    cwd: dir,
    encoding: 'utf8',
    env: { ...process.env, NODE_PATH: join(top, 'node_modules') },
  });
  // An lklfuse example that failed half-way must not leave its mount behind.
  spawnSync('sh', ['-c', `mountpoint -q '${dir}/mnt' && fusermount3 -u -z '${dir}/mnt'; true`]);
  // (What it said on stderr, shown when it failed.)
  const failed = r.status === 0 ? {} : { stderr: r.stderr };
  expect({ line: e.line, status: r.status, unmet: unmet(e.body, r.stdout), ...failed }).toEqual({ line: e.line, status: 0, unmet: [] });
});
