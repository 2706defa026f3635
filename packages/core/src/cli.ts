// What the commands share: exit codes, versions, and a reporter that puts
// errors and warnings on stderr, verbose lines on stdout, and progress (ora)
// only on a TTY.
import { constants as osConstants } from 'node:os';
import { KERNEL_RELEASE } from './generated/abi';

/** All was done. */
export const EXIT_OK = 0;
/** Some entries failed; each was named on stderr, the rest was done. */
export const EXIT_SOME_FAILED = 1;
/** Bad usage, or a failure that stopped everything. */
export const EXIT_FATAL = 2;
/** Stopped by SIGINT, as shells report it (128 + 2); by SIGTERM, 143. */
export const EXIT_INTERRUPTED = 130;

export function versionText(command: string, version: string): string {
  return `${command} ${version} (lkl-um; Linux ${KERNEL_RELEASE}, UML library mode)`;
}

interface Spinner {
  text: string;
  start(): Spinner;
  stop(): Spinner;
}

export interface ReporterOptions {
  quiet?: boolean;
  verbose?: boolean;
  debug?: boolean;
}

export class Reporter {
  errors = 0;
  readonly #warned = new Map<string, number>();
  #spinner: Spinner | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly command: string,
    readonly options: ReporterOptions = {},
  ) {}

  /** A failure of one entry: named on stderr, counted for the exit code. */
  error(message: string): void {
    this.errors++;
    this.#print(`${this.command}: ${message}`);
  }

  /**
   * Something the destination cannot keep (owners on vfat, say): said once
   * per kind, with how many entries it touched at the end.
   */
  warn(kind: string, message: string): void {
    const n = this.#warned.get(kind) ?? 0;
    this.#warned.set(kind, n + 1);
    if (!n && !this.options.quiet) this.#print(`${this.command}: warning: ${message}`);
  }

  /** A line of -v output, on stdout. */
  verbose(message: string): void {
    if (this.options.verbose) this.#withSpinnerPaused(() => process.stdout.write(`${message}\n`));
  }

  /** Progress on a TTY, refreshed from `text()` ten times a second. */
  async startProgress(text: () => string): Promise<void> {
    if (this.options.quiet || this.options.verbose || !process.stderr.isTTY) return;
    const { default: ora } = (await import('ora')) as { default: (o: object) => Spinner };
    this.#spinner = ora({ text: text(), stream: process.stderr }).start();
    this.#timer = setInterval(() => {
      if (this.#spinner) this.#spinner.text = text();
    }, 100);
  }

  stopProgress(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#spinner?.stop();
    this.#spinner = undefined;
  }

  /** The warnings' totals, once all is done. */
  summarize(): void {
    for (const [kind, n] of this.#warned) {
      if (n > 1 && !this.options.quiet) this.#print(`${this.command}: warning: ${kind}: ${n} entries`);
    }
  }

  #print(line: string): void {
    this.#withSpinnerPaused(() => process.stderr.write(`${line}\n`));
  }

  #withSpinnerPaused(fn: () => void): void {
    const s = this.#spinner;
    s?.stop();
    fn();
    s?.start();
  }
}

/**
 * Runs a command's main: exits with what it returns, and turns an error
 * thrown out of it into one line on stderr and EXIT_FATAL (the stack only
 * with --debug).
 */
export function run(command: string, main: () => Promise<number>, debug = process.argv.includes('--debug')): void {
  // A reader of stdout that goes away (--help | head) ends nothing here: what
  // was being done is finished and cleaned up.  (Unheard, the error would
  // kill us with a stack trace.)  fs2tar learns it from its archive stream.
  process.stdout.on('error', () => undefined);
  // Nor does a stderr that takes no more (a closed pipe, a full disk): the
  // messages are lost, not the work; the exit status still tells.
  process.stderr.on('error', () => undefined);
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e: Error) => {
      process.stderr.write(`${command}: ${debug ? e.stack ?? e.message : e.message}\n`);
      process.exitCode = EXIT_FATAL;
    },
  );
}

/**
 * Where a commander program writes: on stderr, its usage errors named as
 * the command's, as GNU tools name theirs ("cptofs: unknown option
 * '--bogus'", not "error: unknown option '--bogus'").
 */
export function commandOutput(command: string): { writeErr(s: string): void } {
  return { writeErr: (s) => process.stderr.write(s.replace(/^error: /, `${command}: `)) };
}

/**
 * Parses a command line with a commander program made with exitOverride():
 * undefined when the command goes on, else its exit status: 0 after --help
 * or --version, EXIT_FATAL after a usage error (commander said what).
 */
export function parseCommandLine(cmd: { parse(argv: string[]): unknown }, argv: string[]): number | undefined {
  try {
    cmd.parse(argv);
    return undefined;
  } catch (e) {
    const code = (e as { code?: string }).code;
    return code === 'commander.helpDisplayed' || code === 'commander.version' ? EXIT_OK : EXIT_FATAL;
  }
}

/** The largest uid or gid: (uid_t)-1 means "leave it as it is" to chown(2). */
export const MAX_ID = 0xfffffffe;

/* Signals this close to the first are the same interruption, told twice. */
const SAME_INTERRUPTION_MS = 1000;

/**
 * Ctrl-C (SIGINT) and SIGTERM, caught: `first` runs on the first, `again`
 * on a later one, each given the status to exit with (128 + the signal's
 * number, as a shell reports a command the signal killed).  One within a
 * second of the first is the same interruption told twice (timeout(1)
 * signals the command, then its process group; a terminal and a kill):
 * not a second one.
 */
export function onInterrupt(first: (status: number) => void, again: (status: number) => void): void {
  let at: number | undefined;
  const handler = (signal: NodeJS.Signals) => {
    const status = 128 + osConstants.signals[signal];
    if (at === undefined) {
      at = Date.now();
      first(status);
    } else if (Date.now() - at >= SAME_INTERRUPTION_MS) {
      again(status);
    }
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

/** A commander parser for an option that takes a whole number, up to `max`. */
export function integerOption(what: string, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    // The code makes commander say so, as for its own usage errors.
    const invalid = (why: string) => Object.assign(new Error(`${what} must be ${why}`), { code: 'commander.invalidArgument' });
    if (!/^\d+$/.test(value)) throw invalid('a number');
    if (Number(value) > max) throw invalid(`a number up to ${max}`);
    return Number(value);
  };
}

/** Formats a byte count: 1.5 MB. */
export function bytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
