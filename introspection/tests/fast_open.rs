//! A tap opens on the log's saved state only when nothing can have changed
//! the image since the recorder closed the log (`tap/fast_open.rs`); every
//! other case hashes the whole image and says why.
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use changelog::disk_state::DiskState;
use changelog::image_stamp::{self, ImageMeta};
use changelog::log::BarrierKind;
use changelog::recording::RecordDir;
use introspection::tap::TapOpenOptions;
use introspection::{BlockTap, TapOpenReport};

const BLOCK: usize = 4096;
const BLOCKS: u64 = 256;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: RecordDir,
    image: PathBuf,
}

/// A recorded run that wrote blocks 10..14 and 200 (image and log alike,
/// as the device and the tap do), closed cleanly.
fn recorded() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path().join("rec"));
    let image = tmp.path().join("disk.img");
    let mut data = vec![0u8; BLOCKS as usize * BLOCK];
    data[..BLOCK].fill(1);
    std::fs::write(&image, &data).unwrap();
    let (mut tap, report) = BlockTap::open(&dir, "vm", &image).unwrap();
    assert!(!report.open.fast);
    for (block, n, byte) in [(10u64, 4usize, 7u8), (200, 1, 9)] {
        let bytes = vec![byte; n * BLOCK];
        write_image(&image, block, &bytes);
        tap.record_write(block * BLOCK as u64, bytes).unwrap();
    }
    tap.barrier(BarrierKind::Flush).unwrap();
    tap.close().unwrap();
    Setup {
        _tmp: tmp,
        dir,
        image,
    }
}

fn write_image(image: &Path, block: u64, data: &[u8]) {
    let f = OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(data, block * BLOCK as u64).unwrap();
}

/// Opens the tap again, checks that its state is the image's, closes it.
fn reopen(s: &Setup, rescan: bool) -> TapOpenReport {
    let opts = TapOpenOptions {
        rescan,
        ..Default::default()
    };
    let (tap, report) = BlockTap::open_with(&s.dir, "vm", &s.image, opts).unwrap();
    let image = DiskState::from_image(&s.image).unwrap();
    assert_eq!(tap.checksum(), image.checksum(), "{:?}", report.open);
    tap.close().unwrap();
    report
}

fn why(report: &TapOpenReport) -> String {
    assert!(!report.open.fast, "expected a full scan");
    report.open.why.clone().unwrap()
}

#[test]
fn a_clean_close_opens_on_the_saved_state_with_a_sample() {
    let s = recorded();
    for _ in 0..2 {
        let report = reopen(&s, false);
        assert!(report.open.fast, "{:?}", report.open);
        assert!(report.open.blocks_read < BLOCKS, "{:?}", report.open);
        assert!(!report.rebased);
    }
    let report = reopen(&s, true);
    assert!(why(&report).contains("--rescan"));
    assert_eq!(report.open.blocks_read, BLOCKS);
}

#[test]
fn a_size_change_is_a_full_scan() {
    let s = recorded();
    let f = OpenOptions::new().write(true).open(&s.image).unwrap();
    f.set_len((BLOCKS + 16) * BLOCK as u64).unwrap();
    assert!(why(&reopen(&s, false)).contains("size changed"));
    assert!(reopen(&s, false).open.fast, "stamped again at close");
}

#[test]
fn an_mtime_change_is_a_full_scan() {
    let s = recorded();
    let f = OpenOptions::new().write(true).open(&s.image).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert!(why(&reopen(&s, false)).contains("modification time"));
}

#[test]
fn another_file_at_the_path_is_a_full_scan() {
    let s = recorded();
    let copy = s.image.with_extension("copy");
    std::fs::copy(&s.image, &copy).unwrap();
    std::fs::rename(&copy, &s.image).unwrap();
    assert!(why(&reopen(&s, false)).contains("another file"));
}

#[test]
fn a_write_with_mtime_put_back_is_caught_by_ctime() {
    let s = recorded();
    let before = std::fs::metadata(&s.image).unwrap().modified().unwrap();
    write_image(&s.image, 11, &[5u8; BLOCK]);
    let f = OpenOptions::new().write(true).open(&s.image).unwrap();
    f.set_modified(before).unwrap(); // what `touch -r` does
    let report = reopen(&s, false);
    assert!(why(&report).contains("ctime"), "{report:?}");
    assert!(report.rebased && report.base_blocks == 1);
}

#[test]
fn a_change_the_metadata_cannot_see_is_caught_by_the_sample() {
    let s = recorded();
    // Change the last written block, then make the stamp match the image's
    // metadata again: what a clock set back or a writer under the file
    // system would leave. The last written blocks are always sampled.
    write_image(&s.image, 200, &[6u8; BLOCK]);
    let log_dir = s.dir.log_dir("vm");
    let mut stamp = image_stamp::load(&log_dir).unwrap().unwrap();
    assert!(stamp.recent.contains(&200), "{:?}", stamp.recent);
    stamp.meta = ImageMeta::of(&std::fs::metadata(&s.image).unwrap());
    image_stamp::save(&log_dir, &stamp).unwrap();
    let report = reopen(&s, false);
    assert!(why(&report).contains("block 200"), "{report:?}");
    assert!(report.rebased && report.base_blocks == 1);
}

#[test]
fn a_log_not_closed_cleanly_is_a_full_scan() {
    let s = recorded();
    let (mut tap, report) = BlockTap::open(&s.dir, "vm", &s.image).unwrap();
    assert!(report.open.fast);
    write_image(&s.image, 30, &[3u8; BLOCK]);
    tap.record_write(30 * BLOCK as u64, [3u8; BLOCK]).unwrap();
    tap.barrier(BarrierKind::Flush).unwrap();
    drop(tap); // a crash: the log stays unsealed
    let report = reopen(&s, false);
    assert!(why(&report).contains("not closed cleanly"), "{report:?}");
    assert!(reopen(&s, false).open.fast);
}

#[test]
fn a_damaged_or_missing_stamp_is_a_full_scan() {
    let s = recorded();
    let path = s.dir.log_dir("vm").join("image.stamp");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(why(&reopen(&s, false)).contains("damaged"));
    std::fs::remove_file(&path).unwrap();
    assert!(why(&reopen(&s, false)).contains("no image stamp"));
    assert!(reopen(&s, false).open.fast);
}
