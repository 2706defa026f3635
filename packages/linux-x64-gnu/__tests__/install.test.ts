// The npm tarballs, as a user gets them: made by scripts/pack.js, installed
// into an empty folder, and run there on a real image, with the native parts
// from @lkl-um/linux-x64-gnu and nothing of this checkout.  No @lkl-um
// package is on the registry, so all of ours come from the tarballs; the
// third-party dependencies (ora, commander, tar-stream) come from npm's
// cache, or from the registry when the cache lacks their full packuments
// (which npm 11 wants here, and an `npm install` from the lockfile does not
// keep): --prefer-offline, not --offline.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { run, tempDir } from '../../core/__tests__/helpers/images';

jest.setTimeout(300_000);

const top = join(__dirname, '../../..');
let work: string;
let tarballs: string;
let app: string;

/* Runs a command in dir with no LKL_UM_* variables: what a user's shell has. */
function inApp(dir: string, cmd: string, args: string[]) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('LKL_UM_')));
  const r = spawnSync(cmd, args, { cwd: dir, env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

beforeAll(() => {
  work = tempDir('lkl-um-install-');
  tarballs = join(work, 'tarballs');
  const made = execFileSync(process.execPath, [join(top, 'scripts/pack.js'), tarballs], { encoding: 'utf8' });
  expect(made).toMatch(/lkl-um-linux-x64-gnu-0\.1\.0\.tgz/);
  app = join(work, 'app');
  fs.mkdirSync(app);
  const all = fs.readdirSync(tarballs).map((f) => join(tarballs, f));
  inApp(app, 'npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...all]);
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

test('the tarballs hold what each package needs, and no tests or sources', () => {
  const list = (name: string) => run('tar', ['-tzf', join(tarballs, name)]).split('\n').filter(Boolean);
  const native = list('lkl-um-linux-x64-gnu-0.1.0.tgz');
  for (const f of ['lkl-um-kernel', 'lkl_um.node', 'lklfuse-server']) expect(native).toContain(`package/bin/${f}`);
  const core = list('lkl-um-core-0.1.0.tgz');
  expect(core).toContain('package/dist/index.js');
  expect(core).toContain('package/dist/generated/abi.js');
  for (const f of [...core, ...list('lkl-um-cptofs-0.1.0.tgz')]) expect(f).not.toMatch(/__tests__|\.test\./);
});

test('installed, the native parts come from @lkl-um/linux-x64-gnu', () => {
  const where = inApp(app, process.execPath, ['-e', "console.log(JSON.stringify(require('@lkl-um/core').locate()))"]);
  const { kernel, addon } = JSON.parse(where) as { kernel: string; addon: string };
  expect(kernel).toBe(join(app, 'node_modules/@lkl-um/linux-x64-gnu/bin/lkl-um-kernel'));
  expect(addon).toBe(join(app, 'node_modules/@lkl-um/linux-x64-gnu/bin/lkl_um.node'));
  for (const cmd of ['cptofs', 'cpfromfs', 'fs2tar', 'lklfuse']) {
    expect(inApp(app, join(app, 'node_modules/.bin', cmd), ['--version'])).toMatch(
      new RegExp(`^${cmd} 0\\.1\\.0 \\(lkl-um; Linux 6\\.12\\.\\d+, UML library mode\\)`),
    );
  }
});

test('cptofs, cpfromfs and fs2tar from the installed folder, on a real image', () => {
  const bin = (cmd: string) => join(app, 'node_modules/.bin', cmd);
  const src = join(work, 'src');
  fs.mkdirSync(join(src, 'etc'), { recursive: true });
  fs.writeFileSync(join(src, 'etc/hostname'), 'installed\n');
  fs.symlinkSync('hostname', join(src, 'etc/name'));
  const image = join(work, 'disk.img');
  inApp(app, bin('cptofs'), ['-i', image, '-t', 'ext4', '--create', '32M', join(src, 'etc'), '/']);
  run('e2fsck', ['-fn', image]);

  const out = join(work, 'out');
  fs.mkdirSync(out);
  inApp(app, bin('cpfromfs'), ['-i', image, '/etc', out]);
  expect(fs.readFileSync(join(out, 'etc/hostname'), 'utf8')).toBe('installed\n');
  expect(fs.readlinkSync(join(out, 'etc/name'))).toBe('hostname');

  const archive = join(work, 'disk.tar');
  inApp(app, bin('fs2tar'), [image, archive]);
  expect(run('tar', ['-tf', archive]).split('\n')).toEqual(expect.arrayContaining(['./etc/hostname', './etc/name']));
});

test('npx one-shot from the tarballs, in an empty folder', () => {
  const empty = join(work, 'empty');
  fs.mkdirSync(empty);
  const p = (name: string) => ['-p', join(tarballs, `lkl-um-${name}-0.1.0.tgz`)];
  const help = inApp(empty, 'npx', ['--prefer-offline', '--yes', ...p('cptofs'), ...p('core'), ...p('linux-x64-gnu'), 'cptofs', '--help']);
  expect(help).toMatch(/Examples:/);
  expect(fs.readdirSync(empty)).toEqual([]);
});
