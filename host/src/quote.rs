//! Quoting untrusted text in errors and logs, bounded.
//!
//! Realm types, ids, plugin names and messages can come from anyone (a
//! client's request, a plugin's `describe`). An error that repeats such a
//! string in full lets the sender make every error, log line and response as
//! large as its input; [`Quoted`] shows at most [`MAX_QUOTED`] characters,
//! escaped like `{:?}`, and says how much was left out.

use std::fmt;

/// Characters of an untrusted string an error repeats.
pub const MAX_QUOTED: usize = 64;

/// `{:?}` of at most [`MAX_QUOTED`] characters, then `…(+N bytes)`.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s.char_indices().nth(MAX_QUOTED) {
            None => write!(f, "{s:?}"),
            Some((cut, _)) => write!(f, "{:?}…(+{} bytes)", &s[..cut], s.len() - cut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_quoted_whole_and_long_ones_cut() {
        assert_eq!(Quoted("ledger").to_string(), "\"ledger\"");
        assert_eq!(Quoted("a\nb").to_string(), "\"a\\nb\"");
        let long = "é".repeat(1000);
        let q = Quoted(&long).to_string();
        assert!(q.starts_with(&format!("{:?}", "é".repeat(MAX_QUOTED))));
        assert!(q.ends_with(&format!("…(+{} bytes)", 2000 - 2 * MAX_QUOTED)));
        assert!(q.len() < 200);
    }
}
