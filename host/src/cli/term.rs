//! What the command line may write besides plain text.
//!
//! Colour codes and progress bars are for a person at a terminal: in a log
//! file, a pipe or a CI transcript they are noise (`\x1b[2m…`) that breaks
//! `grep` and parsers. So colours need a terminal and no `NO_COLOR`
//! (<https://no-color.org>: set and not empty), and progress bars need a
//! terminal. clap applies the same rules to its own help and usage text.

use std::io::IsTerminal;

/// Colours on a stream: only on a terminal, and only without `NO_COLOR`.
fn colours(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Whether log lines on stderr may be coloured.
pub(super) fn stderr_colours() -> bool {
    colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    )
}

/// A progress bar on stderr, drawn only when stderr is a terminal (hidden
/// otherwise: its updates are cursor movements).
pub(super) fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    indicatif::ProgressBar::with_draw_target(Some(len), target)
}

#[cfg(test)]
mod tests {
    use super::colours;

    #[test]
    fn colours_need_a_terminal_and_no_no_color() {
        assert!(colours(true, None));
        assert!(!colours(false, None));
        assert!(!colours(true, Some("1".into())));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(colours(true, Some("".into())));
        assert!(!colours(false, Some("".into())));
    }
}
