#!/usr/bin/env bash
# Builds a Linux guest for `vmm run --kernel` from Debian's packages only:
#   OUT/vmlinux      a small kernel (Debian's linux-source, tinyconfig plus
#                    PVH, virtio-mmio with command-line devices, virtio-blk,
#                    virtio-console, 8250 serial and ext4 built in)
#   OUT/rootfs.ext4  an ext4 root filesystem (mke2fs -d, no loop mount)
#                    with busybox, sqlite3, the static vmm-agent and /init
#   OUT/build-info   what went into them
# Usage: images/build.sh OUT_DIR [--rootfs-only] [--rootfs-mib N]
# Takes minutes on 2 cores (the kernel); `--rootfs-only` skips the kernel.
# Environment: JOBS (make -j), AGENT_TARGET_DIR (cargo's target dir for
# the agent; default OUT/build/cargo).
# Needs root to apt-get what is missing (or the packages listed below).
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-64}"
}

OUT=""
ROOTFS_ONLY=0
ROOTFS_MIB=128
while [ $# -gt 0 ]; do
    case "$1" in
        --rootfs-only) ROOTFS_ONLY=1 ;;
        --rootfs-mib) shift; ROOTFS_MIB="${1:?--rootfs-mib needs a size in MiB}" ;;
        -h|--help) usage 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; usage ;;
        *) [ -z "$OUT" ] || { echo "build.sh: one OUT_DIR only" >&2; usage; }; OUT="$1" ;;
    esac
    shift
done
[ -n "$OUT" ] || usage
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="$OUT/build"
mkdir -p "$BUILD"
JOBS="${JOBS:-$(nproc)}"
# Where cargo builds the agent (AGENT_TARGET_DIR: reuse one across builds).
AGENT_TARGET="${AGENT_TARGET_DIR:-$BUILD/cargo}"

# Debian packages, installed when missing (root) or named (otherwise).
need() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "build.sh: install these Debian packages first: ${missing[*]}" >&2
        exit 1
    fi
    echo "build.sh: installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null 2>&1 ||
        (apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null)
}

need busybox-static sqlite3 e2fsprogs
[ "$ROOTFS_ONLY" = 1 ] || need linux-source bc bison flex libelf-dev make gcc

# --- the agent, static (glibc's static libc: no other Rust target needed)
echo "build.sh: building the static vmm-agent"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
    --manifest-path "$ROOT/Cargo.toml" -p vmm-agent \
    --target x86_64-unknown-linux-gnu --target-dir "$AGENT_TARGET"
AGENT="$AGENT_TARGET/x86_64-unknown-linux-gnu/release/vmm-agent"
if readelf -l "$AGENT" | grep -q "program interpreter"; then
    echo "build.sh: $AGENT is not static" >&2
    exit 1
fi

# --- the root filesystem
R="$BUILD/rootfs"
rm -rf "$R"
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,root,var/lib/app,usr/bin}
cp /bin/busybox "$R/bin/busybox"
for app in $("$R/bin/busybox" --list); do
    [ -e "$R/bin/$app" ] || ln -s busybox "$R/bin/$app"
done
cp /usr/bin/sqlite3 "$R/usr/bin/sqlite3"
# sqlite3's shared libraries and the dynamic loader, at their own paths.
for lib in $(ldd /usr/bin/sqlite3 | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done
cp "$AGENT" "$R/sbin/vmm-agent"
cp "$HERE/init" "$R/init"
chmod 755 "$R/init"
echo "vmm-guest" > "$R/etc/hostname"
rm -f "$OUT/rootfs.ext4"
truncate -s "${ROOTFS_MIB}M" "$OUT/rootfs.ext4"
mke2fs -q -F -t ext4 -L vmm-root -d "$R" "$OUT/rootfs.ext4"

# --- the kernel
KVER=none
if [ "$ROOTFS_ONLY" = 0 ]; then
    TARBALL="$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -1)"
    SRC="$BUILD/$(basename "$TARBALL" .tar.xz)"
    if [ ! -d "$SRC" ]; then
        echo "build.sh: unpacking $TARBALL"
        tar -xf "$TARBALL" -C "$BUILD"
    fi
    cd "$SRC"
    make -s tinyconfig
    # What a vmm guest needs, built in (no modules, no initrd).
    OPTS="64BIT HYPERVISOR_GUEST PARAVIRT KVM_GUEST PVH PRINTK EARLY_PRINTK
          TTY SERIAL_8250 SERIAL_8250_CONSOLE BLOCK BLK_DEV VIRTIO_MENU VIRTIO
          VIRTIO_MMIO VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BLK VIRTIO_CONSOLE
          HVC_DRIVER EXT4_FS BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS DEVTMPFS
          DEVTMPFS_MOUNT FILE_LOCKING FUTEX EPOLL SIGNALFD TIMERFD EVENTFD
          SHMEM TMPFS MULTIUSER POSIX_TIMERS PCI DEVPORT"
    # shellcheck disable=SC2086
    for o in $OPTS; do ./scripts/config --enable "$o"; done
    make -s olddefconfig
    for o in $OPTS; do
        grep -q "^CONFIG_$o=y" .config || {
            echo "build.sh: CONFIG_$o did not stay enabled (a dependency is missing)" >&2
            exit 1
        }
    done
    echo "build.sh: building the kernel with $JOBS jobs (minutes)"
    make -s -j"$JOBS" vmlinux
    cp vmlinux "$OUT/vmlinux"
    KVER="$(make -s kernelversion)"
    cd "$OUT"
fi

cat > "$OUT/build-info" <<INFO
kernel: ${KVER} (Debian linux-source, tinyconfig + vmm options; vmlinux with a PVH note)
busybox: $(dpkg-query -W -f='${Version}' busybox-static)
sqlite3: $(dpkg-query -W -f='${Version}' sqlite3)
vmm-agent: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
rootfs: ext4, ${ROOTFS_MIB} MiB
boot: vmm run --kernel $OUT/vmlinux --disk $OUT/rootfs.ext4 --record rec --mem-mib 256 \\
      --cmdline "console=ttyS0 root=/dev/vda rw init=/init workload=sqlite rows=50"
INFO
echo "build.sh: done: $(ls "$OUT" | grep -v '^build$' | tr '\n' ' ')"
