//! A progress bar for long replays, drawn on stderr only when it is a
//! terminal (indicatif hides it otherwise).
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bar(enabled: bool, records: u64) -> ProgressBar {
    if !enabled || records < 10_000 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(records), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("replay {bar:40} {pos}/{len} records ({per_sec}, eta {eta})")
            .expect("static template"),
    );
    bar
}
