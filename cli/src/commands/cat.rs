//! `coffer cat`: decrypted repository objects as JSON, for debugging.

use super::Context_;
use anyhow::Result;
use coffer_repo::format::index::IndexFile;
use coffer_repo::{BlobId, IndexId};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// config | snapshot ID | tree ID | index ID | keys
    pub kind: String,
    /// The object's id (a snapshot also takes a prefix or `latest`)
    pub id: Option<String>,
    /// Accepted for uniformity: cat always prints JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let need_id = || {
        args.id
            .clone()
            .ok_or_else(|| crate::exit::usage(format!("cat {} needs an id", args.kind)))
    };
    let value = match args.kind.as_str() {
        "config" => serde_json::to_value(repo.config())?,
        "snapshot" => {
            let all = super::load_snapshots(&repo)?;
            let (id, s) = all.resolve(&need_id()?)?;
            serde_json::json!({ "id": id, "snapshot": s })
        }
        "tree" => {
            let id = need_id()?;
            let blob = BlobId::from_hex(&id)
                .ok_or_else(|| crate::exit::usage(format!("{id:?} is not a 64-digit blob id")))?;
            serde_json::to_value(repo.load_tree(&blob)?)?
        }
        "index" => {
            let id = need_id()?;
            let index_id = IndexId::from_hex(&id)
                .ok_or_else(|| crate::exit::usage(format!("{id:?} is not a 64-digit index id")))?;
            let file = IndexFile::load(repo.storage(), repo.keys(), &index_id)?;
            let packs: Vec<_> = file
                .packs
                .iter()
                .map(|(p, blobs)| {
                    let blobs: Vec<_> = blobs
                        .iter()
                        .map(|b| serde_json::json!({"id": b.id, "type": b.kind, "compression": b.compression,
                            "offset": b.offset, "length": b.length, "raw_length": b.raw_length}))
                        .collect();
                    serde_json::json!({ "pack": p, "blobs": blobs })
                })
                .collect();
            serde_json::json!({ "supersedes": file.supersedes, "packs": packs })
        }
        "keys" => {
            let keys: Vec<String> = repo
                .storage()
                .list("keys")?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            serde_json::json!({ "key_files": keys, "opened_with": repo.key_id() })
        }
        other => {
            return Err(crate::exit::usage(format!(
                "cannot cat {other:?}: use config, snapshot, tree, index or keys"
            )))
        }
    };
    outln!("{}", serde_json::to_string_pretty(&value)?);
    Ok(crate::exit::OK)
}
