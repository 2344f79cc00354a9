//! `images/build.sh`: the root filesystem it makes from Debian's packages
//! is ext4 and holds what the Linux guest needs (busybox, sqlite3 and its
//! libraries, /init, the static vmm-agent); the kernel, when a full build
//! is named by `VMM_IMAGES_DIR`, is a vmlinux with a PVH note. Booting the
//! image needs a host with VMX/SVM: that test skips here, saying so.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether this process may install the packages build.sh needs (or has
/// them).
fn can_build() -> Result<(), String> {
    let installed = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
    };
    // SAFETY: geteuid has no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root
        || ["busybox-static", "sqlite3", "e2fsprogs"]
            .iter()
            .all(|p| installed(p))
    {
        Ok(())
    } else {
        Err("not root and busybox-static/sqlite3/e2fsprogs are not all installed".into())
    }
}

#[test]
fn the_image_build_makes_an_ext4_root_with_the_agent() {
    if let Err(why) = can_build() {
        eprintln!("skipped: {why}");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path();
    let agent_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-agent");
    let build = Command::new("bash")
        .arg(root().join("images/build.sh"))
        .arg(out)
        .args(["--rootfs-only", "--rootfs-mib", "64"])
        .env("AGENT_TARGET_DIR", &agent_target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let image = out.join("rootfs.ext4");
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    // The ext4 superblock: magic, label, the extents feature.
    let sb = &bytes[1024..2048];
    assert_eq!(
        u16::from_le_bytes([sb[56], sb[57]]),
        0xef53,
        "ext2/3/4 magic"
    );
    assert_eq!(&sb[120..128], b"vmm-root");
    let incompat = u32::from_le_bytes(sb[96..100].try_into().unwrap());
    assert_ne!(incompat & 0x40, 0, "extents (ext4)");
    // What the guest runs.
    for (path, mode) in [
        ("/init", "0755"),
        ("/sbin/vmm-agent", "0755"),
        ("/bin/busybox", "0755"),
        ("/usr/bin/sqlite3", "0755"),
    ] {
        let stat = debugfs(&image, &format!("stat {path}"));
        assert!(stat.contains("Type: regular"), "{path}: {stat}");
        assert!(stat.contains(&format!("Mode:  {mode}")), "{path}: {stat}");
    }
    assert!(debugfs(&image, "stat /lib64/ld-linux-x86-64.so.2").contains("Type: regular"));
    assert!(debugfs(&image, "stat /bin/sh").contains("Type: symlink"));
    // The agent in the image is the static build and runs.
    let agent = out.join("agent");
    debugfs(&image, &format!("dump /sbin/vmm-agent {}", agent.display()));
    let elf = std::fs::read(&agent).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let interp = Command::new("readelf").arg("-l").arg(&agent).output();
    if let Ok(o) = interp {
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            !text.contains("Requesting program interpreter"),
            "static: {text}"
        );
    }
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let help = Command::new(&agent).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--port"));
    assert!(std::fs::read_to_string(out.join("build-info"))
        .unwrap()
        .contains("kernel: none"));

    // A full build (with the kernel) named by VMM_IMAGES_DIR.
    let Some(full) = std::env::var_os("VMM_IMAGES_DIR") else {
        eprintln!("kernel not checked: set VMM_IMAGES_DIR to the OUT_DIR of a full images/build.sh (it takes minutes)");
        return;
    };
    let vmlinux = std::fs::read(Path::new(&full).join("vmlinux")).unwrap();
    assert!(
        matches!(
            vmm::boot::kernel_kind(&vmlinux),
            vmm::boot::KernelKind::PvhElf { .. }
        ),
        "vmlinux has a PVH entry note"
    );
}

#[test]
fn a_linux_guest_records_its_sqlite_rows() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpuinfo.split_whitespace().any(|f| f == "vmx" || f == "svm") {
        eprintln!(
            "skipped: this host's CPU has no vmx/svm flag (KVM here cannot run a Linux guest's kernel mode; see README \"What this machine's KVM can run\")"
        );
        return;
    }
    let Some(images) = std::env::var_os("VMM_IMAGES_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set VMM_IMAGES_DIR to the OUT_DIR of images/build.sh");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("root.img");
    std::fs::copy(images.join("rootfs.ext4"), &disk).unwrap();
    let rec = dir.path().join("rec");
    let out = vmm(&[
        "run",
        "--kernel",
        images.join("vmlinux").to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--mem-mib",
        "256",
        "--timeout",
        "120",
        "--cmdline",
        "console=ttyS0 root=/dev/vda rw init=/init workload=sqlite rows=20",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("sqlite: rows=19 integrity=ok"),
        "{}",
        stdout(&out)
    );
    let changes = changes_json(&rec, &["--table", "customers"]);
    let has = |op: &str, key: &str| {
        changes
            .iter()
            .any(|c| c["op"] == op && c["key"].as_str() == Some(key))
    };
    assert!(has("insert", "20"), "{changes:?}");
    assert!(has("update", "2"), "{changes:?}");
    assert!(has("delete", "1"), "{changes:?}");
}
