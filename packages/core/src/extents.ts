// Where a file's data is: its extents by SEEK_DATA and SEEK_HOLE, so that
// copies and archives of sparse files keep their holes.

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

/**
 * The data extents [start, end) of a file of `size` bytes, given its lseek;
 * the whole file where the filesystem or seek cannot tell.  `seek` returns
 * -1 past the last data (ENXIO).
 */
export async function dataExtents(
  size: number,
  seek: (offset: number, whence: number) => Promise<number>,
): Promise<[number, number][]> {
  const extents: [number, number][] = [];
  try {
    for (let at = 0; at < size; ) {
      const data = await seek(at, SEEK_DATA);
      if (data < 0 || data >= size) break;
      const hole = await seek(data, SEEK_HOLE);
      const end = hole < 0 ? size : Math.min(hole, size);
      extents.push([data, end]);
      at = end;
    }
    return extents;
  } catch {
    return size ? [[0, size]] : [];
  }
}
