//! How the command line reports a failure.
//!
//! Always on stderr, so stdout carries only answers (a script that pipes
//! stdout into `jq` never gets an error mixed in), and always with a non-zero
//! exit code. As one line of text by default; with `--json` as one JSON
//! object, so a script that asked for JSON can parse failures too:
//!
//! ```json
//! {"error":{"code":"missing_token","message":"401 missing_token: …","status":401}}
//! ```
//!
//! `code` is the node's own error code when the node answered (`status` is
//! then its HTTP status), else one of `unreachable` (no answer from the
//! node), `usage` (the command line did not parse) or `failed` (anything
//! else: a file that cannot be read, a check that found damage, …).

use serde_json::{Value, json};

/// The environment variable `--token` falls back to.
pub(super) const TOKEN_ENV: &str = "REALMHOST_ADMIN_TOKEN";

/// A failed request to a running node.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No HTTP answer at all: the node is not running there, or the network
    /// is in the way.
    #[error("cannot reach the node at {node}")]
    Unreachable {
        /// The `--node` URL.
        node: String,
        /// What the HTTP client saw.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The node answered with an error status. A 401 says how to pass a
    /// token, because the node's own message speaks HTTP
    /// (`Authorization: Bearer`), not command-line flags.
    #[error("{status} {code}: {message}{}", token_hint(*.status, .code))]
    Refused {
        /// HTTP status.
        status: u16,
        /// The node's error code (`error.code` of its JSON body).
        code: String,
        /// The node's message.
        message: String,
    },
}

impl ClientError {
    /// The code a script can match on.
    fn code(&self) -> &str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Refused { code, .. } => code,
        }
    }
}

/// What a CLI user does about a 401: the flag or the variable.
fn token_hint(status: u16, code: &str) -> String {
    if status != 401 {
        return String::new();
    }
    let what = if code == "bad_token" {
        "the node's admin token (or its read token, for read-only commands)"
    } else {
        "a token"
    };
    format!(" (pass {what} with --token <TOKEN>, or set {TOKEN_ENV})")
}

/// The JSON form of a failure.
pub(super) fn error_json(e: &anyhow::Error) -> Value {
    let message = format!("{e:#}");
    match e.downcast_ref::<ClientError>() {
        Some(c @ ClientError::Refused { status, .. }) => {
            json!({ "error": { "code": c.code(), "message": message, "status": status } })
        }
        Some(c) => json!({ "error": { "code": c.code(), "message": message } }),
        None => json!({ "error": { "code": "failed", "message": message } }),
    }
}

/// The JSON form of a command line that did not parse.
pub(super) fn usage_json(e: &clap::Error) -> Value {
    // `render` without styling: the text clap would print, minus colours.
    let text = e.render().to_string();
    let message = text.trim().trim_start_matches("error: ").to_owned();
    json!({ "error": { "code": "usage", "message": message } })
}

/// Print a failure on stderr, as text or as JSON.
pub(super) fn report(e: &anyhow::Error, json: bool) {
    if json {
        eprintln!("{}", error_json(e));
    } else {
        eprintln!("error: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str) -> anyhow::Error {
        ClientError::Refused {
            status,
            code: code.into(),
            message: "msg".into(),
        }
        .into()
    }

    #[test]
    fn a_401_names_the_flag_and_the_variable() {
        let text = format!("{:#}", refused(401, "missing_token"));
        assert!(text.starts_with("401 missing_token: msg"), "{text}");
        assert!(
            text.contains("--token") && text.contains(TOKEN_ENV),
            "{text}"
        );
        let text = format!("{:#}", refused(401, "bad_token"));
        assert!(text.contains("admin token") && text.contains("--token"));
        // Other statuses are left as the node put them.
        assert_eq!(
            format!("{:#}", refused(404, "not_found")),
            "404 not_found: msg"
        );
    }

    #[test]
    fn json_errors_carry_the_nodes_code_and_status() {
        let v = error_json(&refused(409, "seq_conflict"));
        assert_eq!(v["error"]["code"], "seq_conflict");
        assert_eq!(v["error"]["status"], 409);
        assert_eq!(v["error"]["message"], "409 seq_conflict: msg");
        let v = error_json(&anyhow::anyhow!("cannot read x.wasm"));
        assert_eq!(v["error"]["code"], "failed");
        assert_eq!(v["error"]["message"], "cannot read x.wasm");
        assert!(v["error"].get("status").is_none());
    }

    #[test]
    fn json_usage_errors_have_no_styling() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Args {
            #[arg(long)]
            n: u32,
        }
        let e = Args::try_parse_from(["x", "--n", "many"]).unwrap_err();
        let v = usage_json(&e);
        assert_eq!(v["error"]["code"], "usage");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("--n") && !m.contains('\x1b'), "{m}");
    }
}
