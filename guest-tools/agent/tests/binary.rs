//! The `vmm-agent` binary: exit codes, one-line errors, `--once` output.
mod common;

use std::process::Command;

use common::{decode_stream, fiemap_dir, write_pattern, Msg};

fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmm-agent"))
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(out.stdout),
        text(out.stderr),
    )
}

fn one_error_line(stderr: &str, want: &str) {
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("vmm-agent: error: ") && stderr.contains(want),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for (args, want) in [
        (vec!["--file", "/a:kv"], "--port"),
        (vec!["--port", "/p"], "--file"),
        (
            vec!["--port", "/p", "--file", "/a:yaml"],
            "unknown format \"yaml\"",
        ),
        (
            vec!["--port", "/p", "--file", "/a:kv", "--interval", "0"],
            "interval must be above 0",
        ),
        (vec!["--port", "/p", "--file", "/a:kv", "--wat"], "--wat"),
    ] {
        let (code, out, err) = agent(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty());
        one_error_line(&err, want);
    }
    let (code, out, _) = agent(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--sector-offset"));
}

#[test]
fn runtime_errors_exit_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("port");
    let (code, _, err) = agent(&[
        "--port",
        port.to_str().unwrap(),
        "--file",
        "/a:kv",
        "--once",
    ]);
    assert_eq!(code, 1);
    one_error_line(&err, "cannot open port");
    std::fs::write(&port, b"").unwrap();
    let missing = dir.path().join("missing.db");
    let spec = format!("{}:sqlite", missing.display());
    let (code, _, err) = agent(&["--port", port.to_str().unwrap(), "--file", &spec, "--once"]);
    assert_eq!(code, 1);
    one_error_line(&err, "missing.db: No such file or directory");
}

#[test]
fn once_writes_the_hints_to_the_port() {
    let Some(dir) = fiemap_dir() else { return };
    let kv = dir.path().join("store.kv");
    write_pattern(&kv, 10_000, 4);
    let port = dir.path().join("port");
    std::fs::write(&port, b"").unwrap();
    let spec = format!("{}:kv", kv.display());
    let (code, _, err) = agent(&["--port", port.to_str().unwrap(), "--file", &spec, "--once"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let msgs = decode_stream(&std::fs::read(&port).unwrap());
    assert_eq!(msgs.len(), 3);
    assert!(matches!(&msgs[0], Msg::File { id: 1, main: 1, .. }));
    assert!(matches!(&msgs[1], Msg::Extents { id: 1, extents } if !extents.is_empty()));
    assert_eq!(
        msgs[2],
        Msg::Size {
            id: 1,
            size: 10_000,
            exists: true
        }
    );
}
