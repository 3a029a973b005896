//! The JSON body a webhook receives after a run (documented in docs/operations.md): what ran,
//! how it ended, and what the command reported (snapshot id, per-source statistics, warnings).

use crate::commands::Context_;
use serde_json::{json, Value};

/// The body for `command`, started at `started`, that ended with `result`.
pub fn body(
    ctx: &Context_,
    command: &str,
    started: jiff::Timestamp,
    result: &anyhow::Result<u8>,
) -> Value {
    let finished = jiff::Timestamp::now();
    let (exit_code, error) = match result {
        Ok(code) => (*code, None),
        Err(e) => (crate::exit::code_for(e), Some(crate::exit::describe(e))),
    };
    let status = match exit_code {
        crate::exit::OK => "success",
        crate::exit::PARTIAL => "warning",
        _ => "failure",
    };
    let details = ctx.details.lock().map(|d| d.clone()).unwrap_or_default();
    let repository = ctx
        .global
        .repo
        .as_deref()
        .map(coffer_repo::storage::scrub_url_credentials);
    let mut body = json!({
        "coffer_version": env!("CARGO_PKG_VERSION"),
        "command": command,
        "status": status,
        "exit_code": exit_code,
        "hostname": crate::commands::hostname(),
        "repository": repository,
        "started": started.to_string(),
        "finished": finished.to_string(),
        "duration_seconds": finished.duration_since(started).as_secs_f64(),
        "snapshot_id": Value::Null,
        "sources": [],
        "summary": Value::Null,
        "warnings": [],
        "error": error,
    });
    if let Some(map) = body.as_object_mut() {
        for (k, v) in details {
            map.insert(k, v);
        }
    }
    body
}
