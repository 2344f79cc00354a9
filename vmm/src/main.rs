//! `vmm`: boot test VMs on KVM and (in later commands) record, snapshot and
//! replay them. Each subcommand lives in `cli/`; errors become one line on
//! stderr and a non-zero exit status.
mod cli;

fn main() {
    std::process::exit(cli::main());
}
