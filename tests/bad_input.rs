//! Every bad input gets one clear error line and a non-zero exit, and the
//! VMM never starts a guest for it.
mod common;

use common::*;

#[test]
fn missing_kvm_device() {
    let out = vmm(&["run", "--kvm", "/nonexistent/kvm"]);
    assert_one_line_error(&out, 125, "/nonexistent/kvm");
    assert!(stderr(&out).contains("No such file"));
    assert!(stderr(&out).contains("load the kvm module"));
}

#[test]
fn device_that_is_not_kvm() {
    let out = vmm(&["run", "--kvm", "/dev/null"]);
    assert_one_line_error(&out, 125, "not a KVM device");
}

#[test]
fn kvm_device_without_permission() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("kvm");
    std::fs::write(&dev, b"").unwrap();
    std::fs::set_permissions(&dev, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let mut cmd = std::process::Command::new(VMM);
    cmd.args(["run", "--kvm", dev.to_str().unwrap()]);
    // Root opens anything: run the VMM as `nobody` so the mode bits count.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, 125, "Permission denied");
    assert!(stderr(&out).contains("'kvm' group"));
}

#[test]
fn missing_kernel_file() {
    let out = vmm(&["run", "--kernel", "/nonexistent/vmlinux"]);
    assert_one_line_error(&out, 125, "kernel /nonexistent/vmlinux: No such file");
}

#[test]
fn kernel_that_is_not_an_elf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bzImage");
    std::fs::write(&path, b"MZ\x00\x00not an ELF image, just some bytes").unwrap();
    let out = vmm(&["run", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "is not an ELF file");
}

#[test]
fn kernel_elf_without_pvh_note() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmlinux");
    std::fs::write(&path, elf_without_pvh(0x10_0000, 0x1000)).unwrap();
    let out = vmm(&["run", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "has no PVH entry note");
    assert!(
        stderr(&out).contains("no bzImage loader"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn kernel_bzimage_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bzImage");
    let mut bz = vec![0u8; 4096];
    bz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    std::fs::write(&path, bz).unwrap();
    let out = vmm(&["run", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "is a bzImage (Linux boot protocol 2.15)");
    assert!(stderr(&out).contains("CONFIG_PVH=y"), "{}", stderr(&out));
}

#[test]
fn memory_too_small_for_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vmlinux");
    // Ends at 1 MiB + 32 MiB: needs at least 34 MiB.
    std::fs::write(&path, elf_without_pvh(0x10_0000, 32 << 20)).unwrap();
    let out = vmm(&["run", "--kernel", path.to_str().unwrap(), "--mem-mib", "16"]);
    assert_one_line_error(&out, 125, "--mem-mib 16 is too small");
    assert!(stderr(&out).contains("use --mem-mib 34 or more"));
}

#[test]
fn memory_out_of_our_range() {
    let out = vmm(&["run", "--mem-mib", "1"]);
    assert_one_line_error(&out, 125, "--mem-mib 1 is out of range");
}

#[test]
fn memory_larger_than_the_host() {
    let host_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
        / 1024;
    let ask = (host_mib + 1024).to_string();
    let out = vmm(&["run", "--mem-mib", &ask]);
    assert_one_line_error(&out, 125, "larger than this host's memory");
}

#[test]
fn command_line_too_long() {
    let long = format!("workload=hello pad={}", "x".repeat(3000));
    let out = vmm(&["run", "--cmdline", &long]);
    assert_one_line_error(&out, 125, "longer than the limit of 2047");
}

#[test]
fn bad_serial_spec_is_a_usage_error() {
    let out = vmm(&["run", "--serial", "tcp:1234"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("use 'stdout' or 'file:PATH'"));
}

#[test]
fn serial_file_in_missing_directory() {
    let out = vmm(&["run", "--serial", "file:/nonexistent/dir/console.log"]);
    assert_one_line_error(&out, 125, "serial output /nonexistent/dir/console.log");
}
