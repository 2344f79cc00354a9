//! virtio-blk: the guest's writes reach the image exactly, and a hostile
//! driver gets errors while the VMM stays up.
mod common;

use common::*;

#[test]
fn image_holds_exactly_what_the_guest_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 8);
    let w = BlkWrites {
        seed: 11,
        writes: 300,
        max_blocks: 16,
        flush_every: 7,
        dup_every: 4,
    };
    let out = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--cmdline",
        &w.cmdline(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("blk-writes: writes=300"));
    let mut expected = vec![0u8; 8 << 20];
    w.apply(&mut expected);
    let actual = std::fs::read(&disk).unwrap();
    assert!(
        actual == expected,
        "image differs from the host's replay of the workload"
    );
}

#[test]
fn guest_reads_back_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 1);
    let mut image = vec![0u8; 1 << 20];
    for (i, b) in image.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(&disk, &image).unwrap();
    let mut fnv: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &image {
        fnv = (fnv ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let out = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--cmdline",
        "workload=blk-checksum",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        format!("blk-checksum: sectors=2048 fnv64={fnv:#018x}\n")
    );
}

#[test]
fn hostile_driver_gets_errors_and_the_vmm_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let out = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--cmdline",
        "workload=evil-blk",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("evil-blk: all checks passed"));
    assert!(!stdout(&out).contains("FAILED"));
    let err = stderr(&out);
    assert!(
        err.contains("guest sent a bad request: data buffer outside guest memory"),
        "{err}"
    );
    assert!(
        err.contains("descriptor chain loops or is too long"),
        "{err}"
    );
}

#[test]
fn read_only_disk_refuses_writes_and_stays_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    std::fs::write(&disk, vec![0x11u8; 4 << 20]).unwrap();
    let spec = format!("{},ro", disk.display());
    let out = vmm(&["run", "--disk", &spec, "--cmdline", "workload=evil-blk"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("write to a read-only disk: ok"));
    assert!(std::fs::read(&disk).unwrap().iter().all(|b| *b == 0x11));
}

#[test]
fn bad_disk_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = vmm(&["run", "--disk", "/nonexistent/disk.img"]);
    assert_one_line_error(&out, 125, "disk /nonexistent/disk.img: No such file");

    let odd = dir.path().join("odd.img");
    std::fs::write(&odd, vec![0u8; 5000]).unwrap();
    let out = vmm(&["run", "--disk", odd.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "is not a positive multiple of 4096");

    let out = vmm(&["run", "--disk", "x.img,rx"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("unknown disk option 'rx'"));
}

#[test]
fn write_zeroes_and_discard_zero_exactly_their_ranges_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let rec = dir.path().join("rec");
    let out = run_recorded(&disk, &rec, "vm0", "workload=blk-zero", &[]);
    assert!(
        stdout(&out).contains("blk-zero: zeroed=24 kept=40 bad=0"),
        "{}",
        stdout(&out)
    );
    let verify = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    let replayed = dir.path().join("replayed.img");
    let o = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--out",
        replayed.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&replayed).unwrap() == std::fs::read(&disk).unwrap());
}
