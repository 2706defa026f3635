// cptofs and cpfromfs: one program, two names, as in LKL.  Like cp, every
// argument but the last is a source and the last is the destination;
// cptofs copies from the host into the image, cpfromfs out of it.
import { Command, Option } from 'commander';
import { basename, dirname, resolve } from 'node:path';
import { realpath } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { bytes, commandOutput, ERRNO, errnoMessage, integerOption, MAX_ID, onInterrupt, EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, Kernel, openImage, resolveInImage, Reporter, run, versionText, parseCommandLine } from '@lkl-um/core';
import type { MountedImage } from '@lkl-um/core';
import { asBytes, CopyOptions, hostSide, isDir, isLnk, kernelSide, parseNoPreserve, Side, Status, TreeCopier } from './copy';
import { Excluder, globToRegExp, hasGlob } from '@lkl-um/core';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../package.json') as { version: string };

type Direction = 'cptofs' | 'cpfromfs';

interface Options {
  filesystemImage?: string;
  filesystemType: string;
  partition?: number;
  owner?: number;
  group?: number;
  selinux?: string;
  mb: number;
  printk?: boolean;
  /* commander's name for --no-preserve <list>: the list, or true */
  preserve?: string | boolean;
  exclude: string[];
  verbose?: boolean;
  quiet?: boolean;
  create?: string;
  debug?: boolean;
}

function program(name: Direction): Command {
  const into = name === 'cptofs';
  const cmd = new Command(name)
    .description(
      into
        ? 'Copy host files into a filesystem image, with the kernel\'s own driver: no root, no loop device.'
        : 'Copy files out of a filesystem image, with the kernel\'s own driver; the image is opened read-only.',
    )
    .usage('[options] -i IMAGE SOURCE... DEST')
    // One variadic argument holds the sources and DEST (commander allows
    // nothing after a variadic one); named SOURCE so its errors use the
    // usage line's words.
    .argument('<SOURCE...>', into ? 'host files and directories, then the destination inside the image' : 'files and directories inside the image (quoted globs are expanded there), then the host destination')
    // Required, but checked after parsing (main): commander checks required
    // options before unknown ones, and would answer a mistyped option with
    // "required option '-i' not specified".
    .option('-i, --filesystem-image <image>', 'the image file (required)')
    .option('-t, --filesystem-type <type>', 'ext4, btrfs, xfs, vfat, ... or auto', 'auto')
    .option('-P, --partition <n>', 'the partition to use (1 is the first); default the whole image', integerOption('--partition'))
    .option('-m, --mb <mb>', 'kernel memory in MiB', integerOption('--mb'), 256)
    .option('-p, --printk', 'show the kernel\'s messages')
    .option('--no-preserve <list>', 'do not keep these: mode, ownership, timestamps, links, xattr, all')
    .addOption(new Option('--exclude <pattern>', 'skip what matches (repeatable): a name anywhere; a/b, a path ending so; /a/b, from the top').default([]).argParser((v: string, prev: string[]) => [...prev, v]))
    .option('-v, --verbose', 'name each file as it is copied')
    .option('-q, --quiet', 'say nothing but errors')
    .option('--debug', 'show stack traces')
    .version(versionText(name, version), '--version');
  if (into) {
    cmd
      .option('-o, --owner <uid>', 'owner of the copied files, instead of theirs', integerOption('--owner', MAX_ID))
      .option('-g, --group <gid>', 'group of the copied files, instead of theirs', integerOption('--group', MAX_ID))
      .option('-s, --selinux <context>', 'SELinux context (security.selinux) for the copied files')
      .option('--create <size>', 'make the image first if it does not exist, this size, with mkfs.TYPE (-t)');
  }
  cmd.addHelpText(
    'after',
    into
      ? `
Everything cp -a keeps, cptofs keeps: modes, owners, times to the nanosecond,
extended attributes, symlinks, hard links, device nodes, FIFOs, sparse files.

Examples:
  cptofs -i disk.img -t ext4 rootfs/etc rootfs/usr /        copy two trees to the image's root
  cptofs -i disk.img -P 2 --exclude '*.o' src /             into partition 2, without object files
  cptofs -i disk.img src /srv/project                       as /srv/project (/srv must exist)
  cptofs -i new.img -t ext4 --create 1G -o 0 -g 0 build/ /  make a 1 GiB ext4 image, owned by root
  cptofs -i disk.img -- -strange-name /                     -- ends the options

As with cp, DEST must exist when there are several sources; else its parent
must, and DEST becomes the copy.

Ctrl-C stops the copy: what is being written finishes, and the image is
unmounted clean (exit 130). Paths in the image are from its root: '..' stays in it.

Exit status: 0 all was copied, 1 some entries failed (each named), 2 usage or fatal error.`
      : `
The image is opened read-only and never modified (a journal left to replay
is skipped, as by mount -o ro,norecovery).

Examples:
  cpfromfs -i disk.img /etc/hostname .                       one file to the current directory
  cpfromfs -i disk.img -P 1 /var/log out                     a tree, copied as out
  mkdir -p confs && cpfromfs -i disk.img '/etc/*.conf' confs/  a glob, expanded inside the image
  cpfromfs -i disk.img --no-preserve=ownership /home .       as yourself, not as the image's owners

As with cp, DEST must exist when there are several sources (a glob may
give several); else its parent must, and DEST becomes the copy.  A glob
that matches nothing is taken as a name, as bash does: '/a[1]' is a file.

Exit status: 0 all was copied, 1 some entries failed (each named), 2 usage or fatal error.`,
  );
  // The help's Arguments section shows SOURCE... DEST, as the usage line.
  cmd.configureHelp({ argumentTerm: (argument) => (argument.variadic ? `${argument.name()}... DEST` : argument.name()) });
  cmd.exitOverride();
  cmd.configureOutput(commandOutput(name));
  return cmd;
}

/* Expands a source that has glob characters, inside the image. */
async function expandInImage(k: Kernel, root: string, pattern: string): Promise<string[]> {
  const parts = pattern.split('/').filter(Boolean);
  let found = [''];
  for (const part of parts) {
    const next: string[] = [];
    for (const dir of found) {
      if (!hasGlob(part)) {
        next.push(`${dir}/${part}`);
        continue;
      }
      const re = globToRegExp(part);
      const names = await k.fs.readdir(`${root}${dir}` || '/').catch(() => [] as string[]);
      for (const n of names) if (re.test(n) && (!n.startsWith('.') || part.startsWith('.'))) next.push(`${dir}/${n}`);
    }
    found = next;
  }
  return found.sort();
}

/* Whether `path` (a cpfromfs source as given) is there in the image, a dangling symlink too. */
async function existsInImage(k: Kernel, root: string, path: string): Promise<boolean> {
  try {
    await k.fs.lstat(await resolveInImage(k, root, path, false));
    return true;
  } catch {
    return false;
  }
}

/* Where a source goes: into dest if it is a directory, else as dest. */
async function isDirectory(side: Side, path: string): Promise<boolean | undefined> {
  try {
    return isDir((await side.lstat(path)).mode);
  } catch {
    return undefined;
  }
}

/* An errno as cp words it (strerror): "No such file or directory". */
function cpWording(errno: number): string {
  const meaning = errnoMessage(Math.abs(errno)); // node:fs's errnos are negative, the kernel's positive
  return meaning.charAt(0).toUpperCase() + meaning.slice(1);
}

/* A failure to reach a source as cp's stat(2) would have it fail. */
const statFailure = (errno: number) => Object.assign(new Error(cpWording(errno)), { errno });

/** A source found: the path to copy, the path its name comes from, and its status. */
interface Source {
  path: string;
  named: string;
  status: Status;
}

/**
 * Finds a source argument, on the side it is copied from, as cp's stat
 * does; `resolveOn` gives a path's place there (byte string), through a
 * symlink at its end with `followLast`.  A failure is the argument's own
 * ("cannot stat 'ARG': ...", as cp says), not the whole copy's: undefined.
 */
async function findSource(
  src: string,
  from: Side,
  resolveOn: (path: string, followLast: boolean) => Promise<string>,
  report: Reporter,
): Promise<Source | undefined> {
  try {
    // '' names nothing (not '.', as path.resolve would make it).
    if (src === '') throw statFailure(ERRNO.ENOENT);
    const named = await resolveOn(src, false);
    // 'link/' is what the link points to, and 'file/' no path at all:
    // a trailing slash resolves through a symlink, and must end at a directory.
    const needsDirectory = src.endsWith('/');
    const path = needsDirectory ? await resolveOn(src, true) : named;
    const status = await from.lstat(path); // a dangling symlink is copied as one
    if (needsDirectory && !isDir(status.mode)) {
      // Still a symlink once followed: a dangling one, which leads nowhere.
      throw statFailure(isLnk(status.mode) ? ERRNO.ENOENT : ERRNO.ENOTDIR);
    }
    return { path, named, status };
  } catch (e) {
    const errno = (e as { errno?: unknown }).errno;
    if (typeof errno !== 'number') throw e; // not a path's failure
    report.error(`cannot stat '${src}': ${cpWording(errno)}`);
    return undefined;
  }
}

async function main(name: Direction, argv: string[]): Promise<number> {
  const cmd = program(name);
  const stop = parseCommandLine(cmd, argv);
  if (stop !== undefined) return stop;
  const o = cmd.opts<Options>();
  if (o.filesystemImage === undefined) {
    process.stderr.write(`${name}: required option '-i, --filesystem-image <image>' not specified\n`);
    return EXIT_FATAL;
  }
  const paths = cmd.args;
  if (paths.length < 2) {
    process.stderr.write(`${name}: missing destination (usage: ${name} -i IMAGE SOURCE... DEST)\n`);
    return EXIT_FATAL;
  }
  // '' names nothing: not the image's root, nor the current directory.
  if (paths[paths.length - 1] === '') {
    process.stderr.write(`${name}: cannot copy to '': ${cpWording(ERRNO.ENOENT)}\n`);
    return EXIT_FATAL;
  }
  const report = new Reporter(name, { quiet: o.quiet, verbose: o.verbose, debug: o.debug });
  const into = name === 'cptofs';
  const copyOptions: CopyOptions = {
    preserve: parseNoPreserve(typeof o.preserve === 'string' ? o.preserve : undefined),
    exclude: new Excluder(o.exclude.map(asBytes)), // names are byte strings (copy.ts)
    owner: o.owner,
    group: o.group,
    selinux: o.selinux,
  };

  let interrupted: number | undefined; // the status to exit with
  let copier: TreeCopier | undefined;
  // The first signal stops the copy: what is in flight finishes, then the
  // image is unmounted cleanly.  A second one exits at once; the kernel
  // then syncs and unmounts by itself, holding the image's lock until it
  // is done.  Caught from before the kernel boots.
  onInterrupt(
    (status) => {
      interrupted = status;
      report.stopProgress();
      process.stderr.write(`${name}: interrupted: syncing and unmounting what was copied\n`);
      copier?.cancel();
    },
    (status) => {
      process.stderr.write(`${name}: interrupted again: exiting now; the kernel finishes syncing the image by itself, and keeps it locked until then\n`);
      process.exit(status);
    },
  );

  const image: MountedImage = await openImage({
    image: o.filesystemImage,
    type: o.filesystemType,
    partition: o.partition,
    readOnly: !into,
    memoryMb: o.mb,
    printk: o.printk,
    create: o.create,
    warn: (message) => report.warn(message, message), // each said once
  });

  const k = image.kernel;
  // Modes come from the sources, not from a umask: on both sides.
  await k.sys.umask(0);
  process.umask(0);
  const inImage = kernelSide(k);
  const [from, to] = into ? [hostSide, inImage] : [inImage, hostSide];
  copyOptions.display = (p) => (p.startsWith(`${image.root}/`) ? p.slice(image.root.length) : p === image.root ? '/' : p);
  if (!into) {
    const st = statSync(o.filesystemImage, { bigint: true });
    copyOptions.image = { dev: st.dev, ino: st.ino };
  }
  copier = new TreeCopier(from, to, copyOptions, report);
  if (interrupted !== undefined) copier.cancel();
  const started = Date.now();
  await report.startProgress(() => {
    const s = (Date.now() - started) / 1000 || 1;
    return `${copier.progress.files} files, ${bytes(copier.progress.bytes)}, ${bytes(copier.progress.bytes / s)}/s`;
  });

  try {
    const destArg = paths[paths.length - 1];
    let sources = paths.slice(0, -1);
    if (!into) {
      const expanded: string[] = [];
      for (const s of sources) {
        const matches = hasGlob(s) ? await expandInImage(k, image.root, s) : [s];
        // A pattern that matches nothing is its own name, as for bash: 'a[1]' may be one.
        if (!matches.length && (await existsInImage(k, image.root, s))) matches.push(s);
        if (!matches.length) report.error(`no match in the image for '${s}'`);
        expanded.push(...matches);
      }
      sources = expanded;
    }
    // A symlink as the destination is followed, as cp does: in the image,
    // inside the image (see resolveInImage).
    const dest = asBytes(
      into ? await resolveInImage(k, image.root, destArg, true) : await realpath(resolve(destArg)).catch(() => resolve(destArg)),
    );
    const destIsDir = await isDirectory(to, dest);
    if (sources.length > 1 && !destIsDir) {
      report.stopProgress();
      process.stderr.write(`${name}: target '${destArg}' is not a directory\n`);
      return EXIT_FATAL;
    }
    if (destIsDir === undefined && !(await isDirectory(to, dirname(dest)))) {
      report.stopProgress();
      process.stderr.write(`${name}: cannot copy to '${destArg}': no such directory${into ? ' in the image' : ''}\n`);
      return EXIT_FATAL;
    }
    const resolveSource = into
      ? async (src: string, followLast: boolean) =>
          followLast ? (await realpath(Buffer.from(resolve(src)), { encoding: 'buffer' })).toString('latin1') : asBytes(resolve(src))
      : async (src: string, followLast: boolean) => asBytes(await resolveInImage(k, image.root, src, followLast));
    for (const src of sources) {
      const source = await findSource(src, from, resolveSource, report);
      if (!source) continue;
      // 'dest/' names a directory, which a file cannot become (as cp says).
      if (destArg.endsWith('/') && !destIsDir && !isDir(source.status.mode)) {
        report.error(`cannot copy '${src}' to '${destArg}': Not a directory`);
        continue;
      }
      // Named as the argument names it: 'link/' is copied as link, not as what it points to.
      const name_ = basename(source.named.replace(/\/+$/, '')) || basename(src);
      // The image's root has no name of its own, and 'dir/.' means what
      // is in dir (as for cp -a dir/. dest): their contents go to dest.
      const contents = source.path === image.root || /(^|\/)\.\/*$/.test(src);
      const target = destIsDir && !contents ? `${dest}/${name_}` : dest;
      await copier.copy(source.path, target, contents ? '' : name_);
    }
  } finally {
    report.stopProgress();
    await image.close();
  }
  if (interrupted !== undefined) return interrupted;
  report.summarize();
  return report.errors ? EXIT_SOME_FAILED : EXIT_OK;
}

export function cli(name: Direction): void {
  run(name, () => main(name, process.argv));
}
