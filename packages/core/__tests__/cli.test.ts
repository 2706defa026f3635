// What the commands share (src/cli.ts), in a command of its own: a child
// Node process running run() with the built package.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const dist = join(__dirname, '../dist');

/* Runs `body` as a command's main; its exit status, with its stderr's reader gone at once. */
function runWithStderrClosed(body: string): Promise<{ status: number | null; signal: string | null }> {
  const script = `
    const { run, Kernel } = require(${JSON.stringify(dist)});
    run('t', async () => { ${body} });`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.destroy(); // every write to stderr now fails with EPIPE
  return new Promise((done) => child.on('exit', (status, signal) => done({ status, signal })));
}

test('a stderr nobody reads stops nothing: the work is done, the status says how it went', async () => {
  // Errors told while kernel calls complete: the write's failure comes in a
  // callback of the addon's, where it once aborted the process (134).
  const r = await runWithStderrClosed(`
    const k = await Kernel.boot();
    let done = 0;
    for (let i = 0; i < 200; i++) {
      process.stderr.write('t: an error about entry ' + i + '\\n');
      await k.sys.getpid();
      done++;
    }
    await k.shutdown();
    return done === 200 ? 0 : 2;`);
  expect(r).toEqual({ status: 0, signal: null });
});

test('an interruption exits as the shell reports the signal: 130 for SIGINT, 143 for SIGTERM', async () => {
  for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    const script = `
      const { run, onInterrupt } = require(${JSON.stringify(dist)});
      run('t', () => new Promise((stop) => {
        const busy = setInterval(() => undefined, 1000); // as a command's work keeps it alive
        onInterrupt((status) => (clearInterval(busy), stop(status)), () => process.exit(99));
        console.log('ready');
      }));`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((ready) => child.stdout.once('data', ready));
    const exited = new Promise((done) => child.on('exit', (code) => done(code)));
    child.kill(signal);
    expect([signal, await exited]).toEqual([signal, status]);
  }
});
