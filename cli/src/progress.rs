//! Showing the progress of a backup or restore while it runs (docs/cli.md, "Progress").
//!
//! The operation updates shared counters (`coffer_repo::ops::progress::Progress`); a thread
//! started here reads them and shows them:
//! - at a terminal (stderr is one, no `-q`, no `-v`, no `--json`): an `indicatif` bar on
//!   stderr with the current source or file, files and bytes done, throughput, and the ETA when
//!   the total is known (restore); it is cleared when the operation ends;
//! - with `--json` (and no `-q`): `{"message_type":"status",…}` lines on stdout, at most two a
//!   second, before the command's final `{"message_type":"summary",…}` line;
//! - otherwise nothing.
//!
//! `COFFER_PROGRESS_FPS` sets how many updates a second (a number above 0, at most 10), or
//! turns progress off with `0`.

use coffer_repo::ops::progress::{Progress, ProgressState};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The variable that sets the update rate.
pub const FPS_VAR: &str = "COFFER_PROGRESS_FPS";

/// How progress is shown for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Off,
    Bar(Duration),
    Json(Duration),
}

/// Updates a second from [`FPS_VAR`]: `None` when unset, `Some(0.0)` for off.
fn fps_from_env() -> anyhow::Result<Option<f64>> {
    let Some(raw) = std::env::var_os(FPS_VAR) else {
        return Ok(None);
    };
    let text = raw.to_string_lossy();
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v.min(10.0))),
        _ => Err(crate::exit::usage(format!(
            "{FPS_VAR}={}: give a number of updates a second (0 turns progress off, at most 10)",
            crate::escape::message(&text)
        ))),
    }
}

fn mode(ctx: &crate::commands::Context_, json: bool) -> anyhow::Result<Mode> {
    let fps = fps_from_env()?;
    if ctx.global.quiet || fps == Some(0.0) {
        return Ok(Mode::Off);
    }
    let every = |default: f64| Duration::from_secs_f64(1.0 / fps.unwrap_or(default));
    if json {
        return Ok(Mode::Json(every(2.0)));
    }
    if ctx.global.verbose == 0 && std::io::stderr().is_terminal() {
        return Ok(Mode::Bar(every(10.0)));
    }
    Ok(Mode::Off)
}

/// A running display; [`Shown::finish`] (or dropping it) stops it and clears the bar.
pub struct Shown {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts showing `progress` of `action` (`"backup"`, `"restore"`) as the run's flags ask.
pub fn start(
    ctx: &crate::commands::Context_,
    json: bool,
    action: &'static str,
    progress: Arc<Progress>,
) -> anyhow::Result<Shown> {
    start_with(mode(ctx, json)?, action, "files", progress)
}

/// For a command without JSON status lines (`check`): the bar alone, counting `unit`
/// (`"packs"`); nothing with `--json`.
pub fn start_bar(
    ctx: &crate::commands::Context_,
    json: bool,
    action: &'static str,
    unit: &'static str,
    progress: Arc<Progress>,
) -> anyhow::Result<Shown> {
    let mode = match mode(ctx, json)? {
        Mode::Json(_) => Mode::Off,
        other => other,
    };
    start_with(mode, action, unit, progress)
}

fn start_with(
    mode: Mode,
    action: &'static str,
    unit: &'static str,
    progress: Arc<Progress>,
) -> anyhow::Result<Shown> {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = match mode {
        Mode::Off => None,
        Mode::Bar(every) => {
            let stop = stop.clone();
            Some(std::thread::spawn(move || {
                bar(action, unit, &progress, every, &stop)
            }))
        }
        Mode::Json(every) => {
            let stop = stop.clone();
            Some(std::thread::spawn(move || {
                json_lines(action, &progress, every, &stop)
            }))
        }
    };
    Ok(Shown { stop, thread })
}

impl Shown {
    /// Stops the display (the bar is cleared; no status line comes after this).
    pub fn finish(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps `d` unless stopped first (the stopper unparks this thread).
fn wait(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::park_timeout(until - now);
    }
}

fn bar(action: &str, unit: &str, progress: &Progress, every: Duration, stop: &AtomicBool) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let spinner = ProgressStyle::with_template(
        "{spinner} {prefix} {msg} {decimal_bytes:>10} {binary_bytes_per_sec:>12} {elapsed:>4}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let known = ProgressStyle::with_template(
        "{prefix} [{bar:25}] {msg} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(spinner);
    bar.set_prefix(action.to_string());
    let mut total_set = false;
    loop {
        let s = progress.read();
        // Nothing drawn before work starts: a restore may still ask its confirmation question.
        let started = s.total_files.is_some() || s.bytes_done > 0 || s.files_done > 0;
        if !started {
            if !wait(every, stop) {
                break;
            }
            continue;
        }
        if let (Some(total), false) = (s.total_bytes, total_set) {
            bar.set_length(total);
            bar.set_style(known.clone());
            total_set = true;
        }
        bar.set_position(s.bytes_done);
        bar.set_message(message(&s, unit));
        bar.tick();
        if !wait(every, stop) {
            break;
        }
    }
    bar.finish_and_clear();
}

/// `3/10 files app.dump`: what the bar says besides bytes and rates.
fn message(s: &ProgressState, unit: &str) -> String {
    let files = match s.total_files {
        Some(t) => format!("{}/{t} {unit}", s.files_done),
        None => format!("{} {unit}", s.files_done),
    };
    let current = crate::escape::message(&s.current).into_owned();
    // The name last and shortened from the left: the end of a path says most.
    let chars: Vec<char> = current.chars().collect();
    let current: String = if chars.len() > 40 {
        std::iter::once('…')
            .chain(chars[chars.len() - 39..].iter().copied())
            .collect()
    } else {
        current
    };
    if current.is_empty() {
        files
    } else {
        format!("{files} {current}")
    }
}

/// One status line's JSON (documented in docs/cli.md).
pub fn status_line(action: &str, s: &ProgressState, elapsed: Duration) -> serde_json::Value {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        s.bytes_done as f64 / seconds
    } else {
        0.0
    };
    let mut line = serde_json::json!({
        "message_type": "status",
        "action": action,
        "seconds_elapsed": seconds.floor() as u64,
        "files_done": s.files_done,
        "bytes_done": s.bytes_done,
        "bytes_per_second": rate.round() as u64,
        "current": s.current,
    });
    if let (Some(files), Some(bytes), Some(map)) =
        (s.total_files, s.total_bytes, line.as_object_mut())
    {
        map.insert("total_files".into(), files.into());
        map.insert("total_bytes".into(), bytes.into());
        let done = if bytes == 0 {
            1.0
        } else {
            (s.bytes_done as f64 / bytes as f64).min(1.0)
        };
        map.insert("percent_done".into(), done.into());
        if rate > 0.0 {
            let left = bytes.saturating_sub(s.bytes_done) as f64 / rate;
            map.insert("seconds_remaining".into(), (left.ceil() as u64).into());
        }
    }
    line
}

fn json_lines(action: &str, progress: &Progress, every: Duration, stop: &AtomicBool) {
    use std::io::Write as _;
    let started = Instant::now();
    while wait(every, stop) {
        let line = status_line(action, &progress.read(), started.elapsed());
        let mut out = std::io::stdout().lock();
        // A reader that went away: the command's own output will say so.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

/// The command's final JSON line: `value` (an object) with `"message_type": "summary"` added.
pub fn summary_line(value: serde_json::Value) -> String {
    let mut map = match value {
        serde_json::Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("report".into(), other);
            map
        }
    };
    map.insert("message_type".into(), "summary".into());
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_have_the_documented_fields() {
        let s = ProgressState {
            files_done: 2,
            bytes_done: 500,
            total_files: None,
            total_bytes: None,
            current: "/srv/a".into(),
        };
        let line = status_line("backup", &s, Duration::from_secs(2));
        assert_eq!(line["message_type"], "status");
        assert_eq!(line["bytes_per_second"], 250);
        assert_eq!(line["seconds_elapsed"], 2);
        assert!(line.get("percent_done").is_none());
        let s = ProgressState {
            total_files: Some(4),
            total_bytes: Some(1000),
            ..s
        };
        let line = status_line("restore", &s, Duration::from_secs(2));
        assert_eq!(line["percent_done"], 0.5);
        assert_eq!(line["seconds_remaining"], 2);
        assert_eq!(line["total_files"], 4);
    }

    #[test]
    fn the_summary_line_is_one_line_with_its_type() {
        let line = summary_line(serde_json::json!({"id": "x", "b": {"c": [1, 2]}}));
        assert!(!line.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["message_type"], "summary");
        assert_eq!(back["b"]["c"][1], 2);
    }

    #[test]
    fn the_bar_message_keeps_the_end_of_a_long_name() {
        let s = ProgressState {
            files_done: 1,
            current: format!("/{}/end.txt", "d".repeat(60)),
            ..ProgressState::default()
        };
        let m = message(&s, "files");
        assert!(m.starts_with("1 files …"), "{m}");
        assert!(m.ends_with("end.txt"), "{m}");
    }
}
