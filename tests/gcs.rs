//! Opt-in: Google Cloud Storage against a real bucket. No emulator here speaks the XML API that
//! object_store uses, so this runs only when `COFFER_TEST_GCS_URL` (`gs://bucket/prefix`, a
//! prefix the test may fill and that should be empty) and `GOOGLE_APPLICATION_CREDENTIALS`
//! (or `GOOGLE_SERVICE_ACCOUNT_KEY`) are set: it is `#[ignore]`d, so it shows as ignored rather
//! than as a pass that tested nothing; run it with
//! `cargo test -p coffer-e2e --test gcs -- --ignored`, where missing settings fail it. The offline
//! checks of the `gs://` configuration are unit tests in `repo-format/src/storage/mod.rs`.

use coffer_e2e::{pseudo_random, Env};
use coffer_repo::{OpenMode, Storage, StorageOptions};

/// The storage conformance suite, shared with repo-format's tests and `tests/s3.rs`.
#[path = "../repo-format/tests/support/storage_conformance.rs"]
mod storage_conformance;

fn gcs_url() -> Option<String> {
    let url = std::env::var("COFFER_TEST_GCS_URL").ok()?;
    let has_credentials = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some()
        || std::env::var_os("GOOGLE_SERVICE_ACCOUNT_KEY").is_some();
    (has_credentials && url.starts_with("gs://")).then_some(url)
}

#[test]
#[ignore = "live GCS bucket: set COFFER_TEST_GCS_URL and GOOGLE_APPLICATION_CREDENTIALS, run with --ignored"]
fn real_gcs_bucket() {
    let base = gcs_url().expect(
        "set COFFER_TEST_GCS_URL=gs://bucket/prefix and GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT_KEY)",
    );
    let run_id = format!("{}-{}", std::process::id(), jiff_free_stamp());
    let base = base.trim_end_matches('/');
    let open = |name: &str| {
        Storage::open_with(
            &format!("{base}/conformance-{run_id}/{name}"),
            OpenMode::Existing,
            &StorageOptions::default(),
        )
        .unwrap()
    };
    storage_conformance::run("GCS", &open, true);

    let mut env = Env::new();
    env.repo = format!("{base}/repo-{run_id}");
    env.extra_env = std::env::vars()
        .filter(|(k, _)| k.starts_with("GOOGLE_"))
        .collect();
    let source = env.path("app");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("data.bin"), pseudo_random(3, 3 * 1024 * 1024)).unwrap();
    env.init();
    env.run(&["backup", source.to_str().unwrap()]).ok();
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let restored = target
        .join(source.strip_prefix("/").unwrap())
        .join("data.bin");
    assert_eq!(
        std::fs::read(restored).unwrap(),
        std::fs::read(source.join("data.bin")).unwrap()
    );
}

/// Seconds since the epoch, to keep runs apart.
fn jiff_free_stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
