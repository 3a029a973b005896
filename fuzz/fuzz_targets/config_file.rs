//! The config file (`coffer.toml`): any text gives a parsed, validated config or an error
//! message, never a panic; and no message quotes a database password from the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../cli/src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = config::parse(text) {
        let message = format!("{e:#}");
        if let Some(secret) = password_in(text) {
            assert!(!message.contains(&format!(":{secret}@")), "{message}");
        }
    }
});

/// The password of the first `postgres://user:password@` URL in `text`, if it is one that
/// could not occur by chance in a message (long enough, no separators).
fn password_in(text: &str) -> Option<&str> {
    let rest = &text[text.find("postgres://")? + "postgres://".len()..];
    let userinfo = &rest[..rest.find('@')?];
    let password = &userinfo[userinfo.find(':')? + 1..];
    let plain = password.len() >= 6
        && password.chars().all(|c| c.is_ascii_alphanumeric())
        && !userinfo[..userinfo.find(':')?].contains('/');
    plain.then_some(password)
}
