// fs2tar: export a filesystem image to a tar archive, with the kernel's own
// driver.  The image is opened read-only and never modified.
import { Command, Option } from 'commander';
import { createWriteStream, fstatSync, lstatSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { pack as tarPack } from 'tar-stream';
import { bytes, commandOutput, integerOption, onInterrupt, EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, Excluder, openImage, resolveInImage, Reporter, run, versionText, parseCommandLine } from '@lkl-um/core';
import { ArchiveClosed, ExportOptions, ownerNames, padToRecord, shown, TarExporter, useOwnHeaders } from './export';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../package.json') as { version: string };

interface Options {
  filesystemType: string;
  partition?: number;
  printk?: boolean;
  mb: number;
  selinux?: string;
  directory?: string;
  exclude: string[];
  gzip?: boolean;
  zstd?: boolean;
  format: 'pax' | 'gnu';
  ownerNames?: boolean;
  sort: 'name' | 'none';
  mtime?: string;
  clampMtime?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  debug?: boolean;
}

function program(): Command {
  return new Command('fs2tar')
    .allowExcessArguments(false)
    .description('Export a filesystem image to a tar archive, with the kernel\'s own driver; the image is opened read-only.')
    .usage('[options] IMAGE [TARBALL|-]')
    .argument('<image>', 'the image file')
    .argument('[tarball]', 'the archive to write; - or nothing: standard output')
    .option('-t, --filesystem-type <type>', 'ext4, btrfs, xfs, vfat, ... or auto', 'auto')
    .option('-P, --partition <n>', 'the partition to export (1 is the first); default the whole image', integerOption('--partition'))
    .option('-C, --directory <path>', 'export this directory of the image, not all of it')
    .addOption(new Option('--exclude <pattern>', 'skip what matches (repeatable): a name anywhere; a/b, a path ending so; /a/b, from the top; * matches / too, as in GNU tar').default([]).argParser((v: string, prev: string[]) => [...prev, v]))
    // Declared as conflicting: commander then reports -z --zstd as a usage
    // error while parsing, before the kernel boots.
    .addOption(new Option('-z, --gzip', 'compress with gzip').conflicts('zstd'))
    .addOption(new Option('--zstd', 'compress with zstd (needs Node 22.15 or later)').conflicts('gzip'))
    .addOption(new Option('--format <format>', 'pax keeps everything; gnu is older: no xattrs, no nanoseconds').choices(['pax', 'gnu']).default('pax'))
    .option('--numeric-owner', 'owners as numbers only (the default)')
    .option('--owner-names', 'owner and group names from the image\'s own /etc/passwd and /etc/group')
    .addOption(new Option('--sort <order>', 'name: the same image always gives the same bytes').choices(['name', 'none']).default('name'))
    .option('--mtime <date>', 'set every mtime to this (a date, or @seconds); drops atime and ctime')
    .option('--clamp-mtime', 'with --mtime: only lower mtimes newer than it')
    .option('-s, --selinux <file>', 'write "path context" lines for the entries\' SELinux labels to this file (in a path, \\\\ and \\n stand for a backslash and a newline)')
    .option('-m, --mb <mb>', 'kernel memory in MiB', integerOption('--mb'), 256)
    .option('-p, --printk', 'show the kernel\'s messages')
    .option('-v, --verbose', 'name each entry as it is archived (on stderr when the archive goes to stdout)')
    .option('-q, --quiet', 'say nothing but errors')
    .option('--debug', 'show stack traces')
    .version(versionText('fs2tar', version), '--version')
    .addHelpText(
      'after',
      `
Everything GNU tar --xattrs --acls keeps is kept: modes, numeric owners,
times to the nanosecond (pax), extended attributes (SCHILY.xattr.*), POSIX
ACLs (as their xattrs, and as SCHILY.acl.access and SCHILY.acl.default, so
tar --acls restores them), hard links, devices, FIFOs, long names, files
over 8 GiB, sparse files (GNU sparse 1.0). Sockets are skipped, with a warning.

Examples:
  fs2tar disk.img rootfs.tar                  the whole image
  fs2tar -P 2 -z disk.img root.tar.gz         partition 2, gzipped
  fs2tar -C /var/log disk.img - | tar -t      a subtree, to stdout
  fs2tar --mtime @0 --owner-names disk.img out.tar   reproducible, with names

Exit status: 0 all was exported, 1 some entries failed (each named), 2 usage or fatal error.`,
    )
    .exitOverride()
    .configureOutput(commandOutput('fs2tar'));
}

function parseTime(text: string): bigint {
  if (text.startsWith('@')) {
    // @SECONDS[.FRACTION], the sign on the whole: @-1.5 is 1.5 s before 1970.
    const m = /^@(-?)(\d+)(?:\.(\d*))?$/.exec(text);
    if (!m) throw new Error(`--mtime: not @SECONDS[.FRACTION]: ${text}`);
    const ns = BigInt(m[2]) * 1_000_000_000n + BigInt((m[3] ?? '').padEnd(9, '0').slice(0, 9));
    return m[1] ? -ns : ns;
  }
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new Error(`--mtime: not a date: ${text}`);
  return BigInt(ms) * 1_000_000n;
}

async function main(argv: string[]): Promise<number> {
  const cmd = program();
  const stop = parseCommandLine(cmd, argv);
  if (stop !== undefined) return stop;
  const o = cmd.opts<Options>();
  const [imagePath, target = '-'] = cmd.args;
  const toStdout = target === '-';
  const report = new Reporter('fs2tar', { quiet: o.quiet, verbose: o.verbose, debug: o.debug });
  if (o.zstd && !('createZstdCompress' in zlib)) {
    process.stderr.write(`fs2tar: --zstd: this Node (${process.version}) has no zstd; Node 22.15 and later do\n`);
    return EXIT_FATAL;
  }
  // Checked before the kernel boots: usage errors.
  if (o.clampMtime && !o.mtime) {
    process.stderr.write('fs2tar: --clamp-mtime needs --mtime\n');
    return EXIT_FATAL;
  }
  let mtimeNs: bigint | undefined;
  try {
    mtimeNs = o.mtime ? parseTime(o.mtime) : undefined;
  } catch (e) {
    process.stderr.write(`fs2tar: ${(e as Error).message}\n`);
    return EXIT_FATAL;
  }
  if (isTheImage(imagePath, toStdout ? 1 : target)) {
    process.stderr.write(`fs2tar: '${toStdout ? 'standard output' : target}' is the image being read: not overwritten\n`);
    return EXIT_FATAL;
  }
  if (toStdout && process.stdout.isTTY) {
    process.stderr.write('fs2tar: refusing to write an archive to a terminal (name a file, or redirect)\n');
    return EXIT_FATAL;
  }

  // The first signal stops the export where it is (the archive is
  // abandoned, its partial file removed) and the image is closed; a
  // second one exits at once, removing the partial file too.  Caught from
  // before the kernel boots.  stopExport is set only while the archive's
  // pipeline is there to hear it: a pack destroyed before that, or after
  // the pipeline settled, would throw its error with no one listening.
  let interrupted: number | undefined; // the status to exit with
  let stopExport: (() => void) | undefined;
  let partial: string | undefined;
  onInterrupt(
    (status) => {
      interrupted = status;
      report.stopProgress();
      stopExport?.();
    },
    (status) => {
      if (partial) rmSync(partial, { force: true });
      process.exit(status);
    },
  );

  const image = await openImage({
    image: imagePath,
    type: o.filesystemType,
    partition: o.partition,
    readOnly: true,
    memoryMb: o.mb,
    printk: o.printk,
    warn: (message) => report.warn(message, message), // each said once
  });
  const k = image.kernel;
  // A regular file (or a new one) is written under a temporary name and
  // renamed once complete: a failed export leaves no archive that looks
  // whole.  Anything else (a device, a FIFO, a symlink to one) is written
  // to as it is, as tar does: renaming over it would replace it.
  partial = toStdout || !replaceable(target) ? undefined : join(dirname(target), `.${basename(target)}.partial-${process.pid}`);

  const selinux: Buffer[] | undefined = o.selinux ? [] : undefined;
  // -C names a directory from the image's root, as in a chroot.
  const resolved = o.directory ? await resolveInImage(k, image.root, o.directory, true).catch(() => undefined) : image.root;
  // The exporter carries paths as byte strings (see export.ts).
  const root = resolved === undefined ? undefined : Buffer.from(resolved, 'utf8').toString('latin1');
  const options: ExportOptions = {
    format: o.format,
    // As GNU tar's: a * matches '/' too, so that tar command lines carry over.
    exclude: new Excluder(o.exclude.map((p) => Buffer.from(p, 'utf8').toString('latin1')), true),
    sort: o.sort === 'name',
    names: o.ownerNames ? await ownerNames(k, image.root, (message) => report.warn('owner-names', message)) : undefined,
    mtime: mtimeNs === undefined ? undefined : { ns: mtimeNs, clamp: !!o.clampMtime },
    selinux: selinux && ((path, context) => selinux.push(selinuxLine(path.slice(image.root.length) || '/', context))),
    onEntry: o.verbose ? (name) => (toStdout ? process.stderr : process.stdout).write(Buffer.from(`${name}\n`, 'latin1')) : undefined,
  };
  const display = (p: string) => shown(p.startsWith(`${image.root}/`) ? p.slice(image.root.length) : p === image.root ? '/' : p);

  let complete = false;
  try {
    const st = root === undefined ? undefined : await k.fs.stat(Buffer.from(root, 'latin1')).catch(() => undefined);
    if (root === undefined || !st) throw new Error(`${o.directory}: no such directory in the image`);
    if (!st.isDirectory()) throw new Error(`${o.directory}: not a directory in the image`);
    const pack = tarPack();
    useOwnHeaders(pack);
    const exporter = new TarExporter(k, pack, options, report);
    const started = Date.now();
    await report.startProgress(() => {
      const s = (Date.now() - started) / 1000 || 1;
      return `${exporter.progress.entries} entries, ${bytes(exporter.progress.bytes)}, ${bytes(exporter.progress.bytes / s)}/s`;
    });

    // Interrupted during the boot, the mount or the look at the image:
    // no archive is begun.
    if (interrupted !== undefined) return interrupted;
    const compress = o.gzip ? [zlib.createGzip()] : o.zstd ? [(zlib as unknown as { createZstdCompress(): NodeJS.ReadWriteStream }).createZstdCompress()] : [];
    const out = toStdout ? process.stdout : createWriteStream(partial ?? target);
    let writeError: NodeJS.ErrnoException | undefined;
    const writing = pipeline(pack, padToRecord(), ...(compress as []), out)
      .catch((e: NodeJS.ErrnoException) => {
        writeError = e;
        pack.destroy(e);
      })
      .finally(() => (stopExport = undefined));
    stopExport = () => pack.destroy(new ArchiveClosed());
    try {
      await exporter.export(root, display);
      pack.finalize();
    } catch (e) {
      if (!(e instanceof ArchiveClosed) && !writeError) throw e;
    }
    await writing;
    if (interrupted !== undefined) return interrupted;
    if (writeError) {
      throw new Error(
        writeError.code === 'EPIPE'
          ? 'the archive\'s reader went away (EPIPE): the archive is incomplete'
          : `cannot write ${toStdout ? 'to standard output' : target}: ${writeError.message}`,
      );
    }
    complete = true;
  } finally {
    report.stopProgress();
    try {
      await image.close();
      // Renamed only once the image is closed: a signal while it closes
      // leaves no archive either.  From here to the exit nothing waits, so
      // no later signal is handled.
      if (partial && complete && interrupted === undefined) renameSync(partial, target);
    } finally {
      if (partial) rmSync(partial, { force: true }); // there still unless renamed
      // What is still queued for a reader that went quiet (a pipe) is
      // dropped: an interrupted archive is incomplete anyway.
      if (interrupted !== undefined) process.exit(interrupted);
    }
  }
  if (selinux) writeFileSync(o.selinux!, Buffer.concat(selinux));
  report.summarize();
  return report.errors ? EXIT_SOME_FAILED : EXIT_OK;
}

export function cli(): void {
  run('fs2tar', () => main(process.argv));
}

/*
 * A line of -s's file: the path from the image's root in its own bytes (a
 * backslash or a newline in it written \\ and \n), a space, the context.
 */
function selinuxLine(path: string, context: Buffer): Buffer {
  const end = context.indexOf(0);
  return Buffer.concat([
    Buffer.from(path.replace(/\\/g, '\\\\').replace(/\n/g, '\\n'), 'latin1'),
    Buffer.from(' '),
    end < 0 ? context : context.subarray(0, end),
    Buffer.from('\n'),
  ]);
}

/*
 * Whether the archive would go over the image: `target` names it (through
 * a symlink too), or standard output (fd 1) is it.  A typo must not turn
 * a disk image into its own archive.
 */
function isTheImage(image: string, target: string | number): boolean {
  try {
    const a = statSync(image, { bigint: true });
    const b = typeof target === 'number' ? fstatSync(target, { bigint: true }) : statSync(target, { bigint: true });
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false; // one of them is not there: fs2tar says so later
  }
}

/* Whether the archive may be written beside `target` and renamed over it. */
function replaceable(target: string): boolean {
  try {
    return lstatSync(target).isFile();
  } catch {
    return true; // not there yet
  }
}
