//! `vmm`: boot test VMs on KVM and (in later commands) record, snapshot and
//! replay them. Each subcommand lives in `cli/`; errors become one line on
//! stderr and a non-zero exit status.
mod cli;

fn main() {
    // Die quietly on a closed pipe (`vmm log show | head`), as Unix tools do.
    // SAFETY: setting a signal's disposition to its default is always sound.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    std::process::exit(cli::main());
}
