// --exclude patterns and globs: what matches, as tar and rsync have it.
import { Excluder, globToRegExp } from '../src';

describe('Excluder', () => {
  test.each([
    // A name matches anywhere.
    ['sub', 'x/sub', true],
    ['*.o', 'd/x.o', true],
    // a/b: a path ending so, whole names only.
    ['a/b', 'a/b', true],
    ['a/b', 'exs/a/b', true],
    ['a/b', 'xa/b', false],
    ['d/*.o', 'e/d/x.o', true],
    ['d/*.o', 'd/e/x.o', false],
    // /a/b and ./a/b: from the top.
    ['/a/b', 'a/b', true],
    ['/a/b', 'exs/a/b', false],
    ['./a/b', 'x/a/b', false],
    ['./etc', 'etc', true],
    ['./etc', 'x/etc', false],
    // A trailing slash names the same.
    ['a/b/', 'a/b', true],
  ])('%s against %s: %s', (pattern, rel, excluded) => {
    expect(new Excluder([pattern]).excludes(rel)).toBe(excluded);
  });

  test("GNU tar's way (fs2tar): * matches '/' too", () => {
    expect(new Excluder(['etc/*.conf'], true).excludes('etc/PackageKit/PackageKit.conf')).toBe(true);
    expect(new Excluder(['etc/*.conf']).excludes('etc/PackageKit/PackageKit.conf')).toBe(false);
    expect(new Excluder(['*.conf'], true).excludes('etc/a.conf')).toBe(true);
    expect(new Excluder(['*.tmp'], true).excludes('a\nb.tmp')).toBe(true); // a newline is a character too
  });
});

describe('globToRegExp', () => {
  test.each([
    ['**/foo', 'foo', true],
    ['**/foo', 'a/b/foo', true],
    ['**/foo', 'xfoo', false],
    ['**/foo', 'x/barfoo', false],
    ['a/**', 'a/b/c', true],
    ['*', 'a/b', false],
    ['[!a]x', 'bx', true],
    ['[!a]x', 'ax', false],
    ['?.c', 'a.c', true],
  ])('%s against %s: %s', (pattern, path, matches) => {
    expect(globToRegExp(pattern).test(path)).toBe(matches);
  });
});
