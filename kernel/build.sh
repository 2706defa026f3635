#!/usr/bin/env bash
# Builds the lkl-um kernel: Debian's linux-source-6.12 (or LKL_UM_KERNEL_SRC,
# a tarball or a directory), with kernel/patches applied and kernel/config
# on top of allnoconfig, in UML library mode.
#
#   kernel/build.sh [OUT]        (OUT defaults to build/kernel)
#
# OUT receives what the kernel process is linked from and what the rest of
# the build reads:
#   vmlinux.o version-timestamp.o vmlinux.lds   the kernel, ready to link
#   link-flags link-libs                        how to link it (with
#                                               -Wl,--script=OUT/vmlinux.lds)
#   include/um_library.h                        the host interface
#   include/uapi/                               the kernel's UAPI headers
#   include/internal/                           ABI that UAPI leaves out
#   config kernel.release inputs.sha256         what was built, from what
#
# A build is kept in the cache (LKL_UM_CACHE, default ~/.cache/lkl-um) under
# the hash of its inputs: the kernel source, the patches, the config, this
# script and the compiler.  With the same inputs nothing is rebuilt; with
# different ones the object tree is reused and ccache makes it quick.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(dirname "$here")
out=${1:-$top/build/kernel}
src=${LKL_UM_KERNEL_SRC:-/usr/src/linux-source-6.12.tar.xz}
cache=${LKL_UM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lkl-um}
jobs=${LKL_UM_JOBS:-$(nproc)}

say() { printf 'kernel: %s\n' "$*" >&2; }
die() { printf 'kernel: %s\n' "$*" >&2; exit 2; }

for tool in gcc make flex bison bc perl; do
	command -v "$tool" >/dev/null ||
		die "$tool is missing; on Debian/Ubuntu: sudo apt-get install build-essential flex bison bc perl"
done
[ -e "$src" ] ||
	die "no kernel source at $src; on Debian: sudo apt-get install linux-source-6.12, or set LKL_UM_KERNEL_SRC to a 6.12 tarball or tree"

cc="gcc"
if command -v ccache >/dev/null; then
	cc="ccache gcc"
else
	say "ccache not found: rebuilds will be slow (sudo apt-get install ccache)"
fi

# --- the inputs and their hash ------------------------------------------------
source_id() {
	if [ -d "$src" ]; then
		(cd "$src" && find . -type f -not -path './.git/*' -printf '%P %s %T@\n' |
			LC_ALL=C sort | sha256sum | cut -d' ' -f1)
	else
		sha256sum "$src" | cut -d' ' -f1
	fi
}

mapfile -t patches < <(grep -v '^\s*#' "$here/patches/series" | grep -v '^\s*$')
inputs=$(
	echo "source $(source_id)"
	for p in "${patches[@]}"; do echo "patch $p $(sha256sum < "$here/patches/$p" | cut -d' ' -f1)"; done
	echo "config $(sha256sum < "$here/config" | cut -d' ' -f1)"
	echo "script $(sha256sum < "$here/build.sh" | cut -d' ' -f1)"
	echo "compiler $(gcc --version | head -n1) / $(ld --version | head -n1)"
)
key=$(sha256sum <<<"$inputs" | cut -d' ' -f1 | cut -c1-16)
done_dir=$cache/kernel-$key

publish() {
	rm -rf "$out.tmp"
	mkdir -p "$(dirname "$out")"
	cp -a "$done_dir" "$out.tmp"
	rm -rf "$out"
	mv "$out.tmp" "$out"
}

if [ -f "$done_dir/.complete" ]; then
	[ -f "$out/.complete" ] && cmp -s "$out/inputs.sha256" "$done_dir/inputs.sha256" ||
		publish
	say "up to date ($(cat "$out/kernel.release"), $key)"
	exit 0
fi

# --- the source tree: extracted once, then patched in place ------------------
work=$cache/work
tree=$work/src
obj=$work/obj
mkdir -p "$work"
# git apply must treat the tree as plain files, even inside a repository.
export GIT_CEILING_DIRECTORIES=$work

files_of_series() {	# the files a series in directory $1 touches
	local dir=$1 p
	[ -f "$dir/series" ] || return 0
	grep -v '^\s*#' "$dir/series" | grep -v '^\s*$' | while read -r p; do
		git apply --numstat "$dir/$p" | cut -f3
	done
}

source_stamp=$(source_id)
if [ ! -f "$tree/.lkl-um-source" ] || [ "$(cat "$tree/.lkl-um-source")" != "$source_stamp" ]; then
	say "extracting $src"
	rm -rf "$tree" "$obj" "$work/applied"
	mkdir -p "$tree"
	if [ -d "$src" ]; then
		cp -a "$src/." "$tree/"
		rm -rf "$tree/.git"
	else
		tar -xf "$src" -C "$tree" --strip-components=1
	fi
	echo "$source_stamp" > "$tree/.lkl-um-source"
fi

if ! diff -rq "$here/patches" "$work/applied" >/dev/null 2>&1; then
	# Take back the old series, then apply the new one.  Every file either
	# touches is marked changed, so make rebuilds exactly what differs.
	changed=$( { files_of_series "$work/applied"; files_of_series "$here/patches"; } | sort -u)
	if [ -d "$work/applied" ]; then
		say "reverting the previous patches"
		mapfile -t old < <(grep -v '^\s*#' "$work/applied/series" | grep -v '^\s*$')
		for ((i = ${#old[@]} - 1; i >= 0; i--)); do
			(cd "$tree" && git apply -R -p1 "$work/applied/${old[i]}")
		done
	fi
	rm -rf "$work/applied"
	for p in "${patches[@]}"; do
		say "applying $p"
		(cd "$tree" && git apply -p1 "$here/patches/$p") || die "$p does not apply to $src"
	done
	(cd "$tree" && xargs -r touch -- <<<"$changed")
	cp -a "$here/patches" "$work/applied"
fi

# --- configure and build ------------------------------------------------------
mkdir -p "$obj"
kmake() { make -C "$tree" O="$obj" ARCH=um CC="$cc" HOSTCC="$cc" -j"$jobs" "$@"; }

allconfig=$obj/lkl-um.allconfig
sed -e 's/^\(CONFIG_[A-Z0-9_]*\)=n$/# \1 is not set/' "$here/config" > "$allconfig"
kmake -s KCONFIG_ALLCONFIG="$allconfig" allnoconfig >/dev/null

# Every option asked for must have stuck: Kconfig drops what it cannot do.
while IFS='=' read -r name value; do
	case $name in CONFIG_*) ;; *) continue ;; esac
	if [ "$value" = n ]; then
		grep -q "^$name=" "$obj/.config" && die "$name=n did not stick: $(grep "^$name=" "$obj/.config")"
	else
		grep -qx "$name=$value" "$obj/.config" ||
			die "$name=$value did not stick (dependencies missing?): $(grep "$name[= ]" "$obj/.config" || echo unset)"
	fi
done < "$here/config"

say "building (ccache: ${cc%% *}, $jobs jobs)"
kmake -s library
# UML exports no headers of its own: its system call ABI is x86_64's.
make -C "$tree" O="$work/uapi-obj" ARCH=x86 -s headers_install \
	INSTALL_HDR_PATH="$obj/uapi" >/dev/null

# --- publish ------------------------------------------------------------------
stage=$done_dir.tmp
rm -rf "$stage"
mkdir -p "$stage/include"
cp "$obj/vmlinux.o" "$stage/"
cp "$obj/init/version-timestamp.o" "$stage/"
cp "$obj/arch/um/kernel/vmlinux.lds" "$stage/"
# The linker script is named by whoever links: OUT/vmlinux.lds.
sed -e 's# *-Wl,--script=[^ ]*##' "$obj/arch/um/library-ldflags" > "$stage/link-flags"
cp "$obj/arch/um/library-ldlibs" "$stage/link-libs"
cp "$tree/arch/um/include/shared/um_library.h" "$stage/include/"
cp -a "$obj/uapi/include" "$stage/include/uapi"
# ABI the UAPI headers leave out: linux_dirent64, and the umount2() and
# utimensat() constants.
mkdir -p "$stage/include/internal"
cp "$tree/include/linux/dirent.h" "$stage/include/internal/linux_dirent.h"
grep -h -E '^#define (MNT_FORCE|MNT_DETACH|MNT_EXPIRE|UMOUNT_NOFOLLOW|UTIME_NOW|UTIME_OMIT)\b' \
	"$tree/include/linux/fs.h" "$tree/include/linux/stat.h" \
	> "$stage/include/internal/constants.h"
cp "$obj/.config" "$stage/config"
make -s -C "$tree" O="$obj" ARCH=um kernelrelease > "$stage/kernel.release"
echo "$inputs" > "$stage/inputs.sha256"
touch "$stage/.complete"
rm -rf "$done_dir"
mv "$stage" "$done_dir"
publish
say "built $(cat "$out/kernel.release") ($key)"
