// Shell-style patterns, for --exclude and for cpfromfs sources: * and ?
// within a name, [...] classes, ** across directories.

/**
 * A shell pattern as a RegExp.  With `matchSlash`, * and ? match '/' too,
 * as GNU tar's --exclude patterns do (its --wildcards-match-slash).
 */
export function globToRegExp(pattern: string, matchSlash = false): RegExp {
  const notSlash = matchSlash ? '[\\s\\S]' : '[^/]';
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*' && pattern[i + 1] === '*') {
      i++;
      // '**/': any directories, or none; a bare '**': anything.
      if (pattern[i + 1] === '/') {
        re += '(?:[\\s\\S]*/)?';
        i++;
      } else re += '[\\s\\S]*';
    } else if (c === '*') {
      re += `${notSlash}*`;
    } else if (c === '?') {
      re += notSlash;
    } else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let set = pattern.slice(i + 1, end);
      if (set.startsWith('!')) set = '^' + set.slice(1);
      re += `[${set.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else {
      re += c.replace(/[.+^${}()|\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

export function hasGlob(s: string): boolean {
  return /[*?[]/.test(s);
}

/**
 * --exclude patterns, as tar and rsync take them: a pattern with no '/'
 * matches an entry's name wherever it is; one with a '/' matches the end of
 * its path, whole names (a/b: x/a/b too), and with a leading '/' its whole
 * path, from the top of what is being copied (the source itself, or what is
 * in it for '.' and 'dir/.').
 */
export class Excluder {
  readonly #byName: RegExp[] = [];
  readonly #byPath: RegExp[] = [];

  /** `matchSlash`: * and ? match '/' too, as in GNU tar's --exclude (fs2tar's). */
  constructor(patterns: string[], matchSlash = false) {
    for (const p of patterns) {
      // From the top: '/a/b', or './a/b' as names in an archive start (fs2tar's do).
      const fromTop = /^\.?\//.test(p);
      const trimmed = p.replace(/\/+$/, '').replace(/^(\.?\/)+/, '');
      const re = globToRegExp(trimmed, matchSlash);
      if (!fromTop && !trimmed.includes('/')) this.#byName.push(re);
      else if (fromTop) this.#byPath.push(re);
      else this.#byPath.push(new RegExp(`^(?:[\\s\\S]*/)?${re.source.slice(1)}`));
    }
  }

  excludes(rel: string): boolean {
    const name = rel.slice(rel.lastIndexOf('/') + 1);
    return this.#byName.some((r) => r.test(name)) || this.#byPath.some((r) => r.test(rel));
  }
}
