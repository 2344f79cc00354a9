//! The README's shell examples, run as written.
//!
//! Every fenced ```` ```sh ```` block of README.md is run, in order, in one
//! bash session started in an empty temporary directory, with the `vmm`
//! under test first on PATH: a new user following the README top to
//! bottom does the same. Each command's exit status and output are checked
//! against the README's own trailing comments (documented in its section
//! "Trying it"):
//!
//! - `# exits N`: the status is N (without it: 0);
//! - `# prints "TEXT"`: stdout+stderr contain TEXT (`\"` for a quote);
//! - `# skip: WHY`: not run; WHY is printed. A comment line `# skip: WHY`
//!   on its own skips the rest of its block.
//!
//! Lines ending in `\` continue on the next line; the markers go on the
//! last one. A failure names the block, the README line, the command, what
//! was expected and what it printed.
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VMM: &str = env!("CARGO_BIN_EXE_vmm");

/// How long the whole README may take (a debug build of `vmm`).
const TIME_LIMIT: Duration = Duration::from_secs(120);

/// One command of a README example.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    /// 1-based number of its ```sh block in the README.
    block: usize,
    /// 1-based README line it starts on.
    line: usize,
    /// The command as bash gets it (continuation lines included).
    command: String,
    /// The exit status it must end with.
    status: i32,
    /// Texts its output must contain.
    prints: Vec<String>,
    /// Why it is not run, if it is not.
    skip: Option<String>,
}

/// The index of the `#` that starts a trailing comment of a shell line,
/// outside quotes and not part of a word (`$#`, `a#b`).
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && !single {
            escaped = true;
        } else if c == '\'' && !double {
            single = !single;
        } else if c == '"' && !single {
            double = !double;
        } else if c == '#' && !single && !double && prev.is_whitespace() {
            return Some(i);
        }
        prev = c;
    }
    None
}

/// Splits a comment (without its `#`) at `;` outside double quotes.
fn segments(comment: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in comment.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ';' && !quoted {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// The text of `prints "TEXT"`, with `\"` and `\\` unescaped.
fn quoted(rest: &str) -> Option<String> {
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut text = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            '"' => return Some(text),
            c => text.push(c),
        }
    }
    None
}

/// Applies the markers of a trailing comment to `step`.
fn apply_markers(comment: &str, step: &mut Step) -> Result<(), String> {
    for seg in segments(comment) {
        if let Some(rest) = seg.strip_prefix("exits ") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            step.status = digits
                .parse()
                .map_err(|_| format!("`exits` without a status in `{seg}`"))?;
        } else if let Some(rest) = seg.strip_prefix("prints ") {
            step.prints
                .push(quoted(rest).ok_or_else(|| format!("`prints` needs \"TEXT\": `{seg}`"))?);
        } else if let Some(why) = seg.strip_prefix("skip:") {
            step.skip = Some(why.trim().to_string());
        }
    }
    Ok(())
}

/// Every command of every ```sh block of `readme`, in order.
fn parse(readme: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let (mut in_block, mut block, mut block_skip) = (false, 0, None::<String>);
    let mut pending: Option<Step> = None;
    for (i, raw) in readme.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if !in_block {
            if trimmed.starts_with("```sh") {
                in_block = true;
                block += 1;
                block_skip = None;
            }
            continue;
        }
        if trimmed.starts_with("```") {
            if let Some(step) = &pending {
                return Err(format!(
                    "README line {}: block {block} ends inside a `\\` continuation",
                    step.line
                ));
            }
            in_block = false;
            continue;
        }
        if pending.is_none() {
            if trimmed.is_empty() {
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                if let Some(why) = comment.trim().strip_prefix("skip:") {
                    block_skip = Some(why.trim().to_string());
                }
                continue;
            }
        }
        let (code, comment) = match comment_start(raw) {
            Some(at) => (raw[..at].trim_end(), Some(&raw[at + 1..])),
            None => (raw.trim_end(), None),
        };
        let step = pending.get_or_insert_with(|| Step {
            block,
            line: n,
            command: String::new(),
            status: 0,
            prints: Vec::new(),
            skip: block_skip.clone(),
        });
        if let Some(code) = code.strip_suffix('\\') {
            if comment.is_some() {
                return Err(format!(
                    "README line {n}: a comment on a continued line; put it on the last line"
                ));
            }
            step.command.push_str(code);
            step.command.push_str("\\\n");
            continue;
        }
        step.command.push_str(code);
        if let Some(comment) = comment {
            apply_markers(comment, step).map_err(|e| format!("README line {n}: {e}"))?;
        }
        steps.push(pending.take().expect("a step is pending"));
    }
    if in_block {
        return Err("the README ends inside a ```sh block".into());
    }
    Ok(steps)
}

/// The bash script that runs `steps`: each in the session's own shell (so
/// `cd`, variables and `$!` carry over), its output in OUT/N.out and its
/// status in OUT/N.rc.
fn script(steps: &[Step], out: &Path) -> String {
    let mut s = String::from("exec </dev/null\n");
    for (i, step) in steps.iter().enumerate() {
        if step.skip.is_some() {
            continue;
        }
        let o = out.join(format!("{i}.out"));
        let rc = out.join(format!("{i}.rc"));
        writeln!(
            s,
            "{{ {}\n}} >'{}' 2>&1\necho $? >'{}'",
            step.command,
            o.display(),
            rc.display()
        )
        .unwrap();
    }
    s
}

fn read(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The end of `text`, at most `max` bytes (on a char boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut from = text.len().saturating_sub(max);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    &text[from..]
}

/// Runs the README's examples in `work`; returns one message per failed
/// command (in README order) and whether the session finished in time.
fn run_readme(steps: &[Step], work: &Path, out: &Path) -> (Vec<String>, bool) {
    let vmm_dir = PathBuf::from(VMM).parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        vmm_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script_path = out.join("readme.sh");
    std::fs::write(&script_path, script(steps, out)).unwrap();
    let mut child = Command::new("bash")
        .arg(&script_path)
        .current_dir(work)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that whatever the examples leave
        // running in the background is stopped with it.
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let started = Instant::now();
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if started.elapsed() > TIME_LIMIT {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: kill(2) on the process group this test created.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();

    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let where_ = format!(
            "README block {} (line {}): `{}`",
            step.block, step.line, step.command
        );
        if let Some(why) = &step.skip {
            println!("skipped {where_}: {why}");
            continue;
        }
        let output = read(&out.join(format!("{i}.out"))).unwrap_or_default();
        let Some(rc) = read(&out.join(format!("{i}.rc"))) else {
            failures.push(format!(
                "{where_} did not finish{}; its output so far:\n{}",
                if finished {
                    ""
                } else {
                    " (the README's examples ran out of time)"
                },
                tail(&output, 4000)
            ));
            // Later commands never ran: this one is the failure.
            break;
        };
        let rc: i32 = rc.trim().parse().unwrap_or(-1);
        let mut wrong = Vec::new();
        if rc != step.status {
            wrong.push(format!("exited {rc}, the README says {}", step.status));
        }
        for text in &step.prints {
            if !output.contains(text.as_str()) {
                wrong.push(format!("did not print \"{text}\""));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{where_} {}; its output:\n{}",
                wrong.join(", "),
                tail(&output, 4000)
            ));
        }
    }
    (failures, finished)
}

#[test]
fn readme_examples_run_as_written() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let steps = parse(&readme).unwrap_or_else(|e| panic!("README.md: {e}"));
    let run = steps.iter().filter(|s| s.skip.is_none()).count();
    assert!(run >= 40, "only {run} README commands would run");
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (failures, finished) = run_readme(&steps, work.path(), out.path());
    println!(
        "ran {run} README commands ({} skipped) in {:.1} s",
        steps.len() - run,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} README example(s) failed{}:\n\n{}",
        failures.len(),
        if finished { "" } else { " (time limit hit)" },
        failures.join("\n\n")
    );
}

#[test]
fn markers_parse() {
    let readme = "text\n```sh\nvmm run   # prints \"a \\\"b\\\"; c\"; exits 3: why\n\
                  echo '#' x#y $# # skip: no reason\n\
                  vmm a \\\n  --b   # exits 1\n```\n\
                  ```sh\n# skip: whole block\nls\n```\n```text\nnot run\n```\n";
    let steps = parse(readme).unwrap();
    assert_eq!(steps.len(), 4, "{steps:#?}");
    assert_eq!(steps[0].command, "vmm run");
    assert_eq!(steps[0].status, 3);
    assert_eq!(steps[0].prints, vec!["a \"b\"; c".to_string()]);
    assert_eq!(steps[1].command, "echo '#' x#y $#");
    assert_eq!(steps[1].skip.as_deref(), Some("no reason"));
    assert_eq!(steps[2].command, "vmm a \\\n  --b");
    assert_eq!((steps[2].line, steps[2].status), (5, 1));
    assert_eq!(
        (steps[3].block, steps[3].skip.as_deref()),
        (2, Some("whole block"))
    );
    assert!(parse("```sh\nvmm a \\   # no\n  b\n```\n").is_err());
    assert!(parse("```sh\nvmm run # prints nothing-quoted\n```\n").is_err());
}

#[test]
fn a_failing_example_is_reported_with_its_place_and_output() {
    let steps =
        parse("```sh\ntrue\necho hi; false   # prints \"hi\"\nsleep 0 # exits 2\n```\n").unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (failures, finished) = run_readme(&steps, work.path(), out.path());
    assert!(finished);
    assert_eq!(failures.len(), 2, "{failures:#?}");
    assert!(
        failures[0]
            .starts_with("README block 1 (line 3): `echo hi; false` exited 1, the README says 0"),
        "{}",
        failures[0]
    );
    assert!(failures[0].ends_with("hi\n"), "{}", failures[0]);
    assert!(
        failures[1].contains("(line 4)") && failures[1].contains("exited 0, the README says 2")
    );
}
