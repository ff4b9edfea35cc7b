//! The member and cluster ids an orchestrator answers with.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EtcdApiError;

/// Name of the identity file in a data directory.
pub const IDENTITY_FILE: &str = "etcd-member.json";

/// This server's identity as an etcd member: the `cluster_id` and
/// `member_id` of every response header and of `MemberList`.
///
/// Clients compare them across reconnects (etcdctl prints them), so a
/// durable store keeps them in its data directory; an in-memory store gets
/// fresh random ones per process, as a fresh etcd cluster would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub cluster_id: u64,
    pub member_id: u64,
}

impl MemberIdentity {
    /// Fresh random non-zero ids (0 means "unset" to etcd clients).
    pub fn random() -> Self {
        let nonzero = || loop {
            let id: u64 = rand::random();
            if id != 0 {
                return id;
            }
        };
        MemberIdentity {
            cluster_id: nonzero(),
            member_id: nonzero(),
        }
    }

    /// The identity kept in `dir`, created (random) on first use. The file
    /// is written to a temporary name and renamed, so a crash never leaves a
    /// half-written identity behind.
    pub fn load_or_create(dir: &Path) -> Result<Self, EtcdApiError> {
        let path = dir.join(IDENTITY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<MemberIdentity>(&bytes)
                .map_err(|source| EtcdApiError::IdentityMalformed { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = MemberIdentity::random();
                write_atomically(&path, &identity)?;
                Ok(identity)
            }
            Err(source) => Err(EtcdApiError::IdentityIo {
                action: "reading",
                path,
                source,
            }),
        }
    }
}

fn write_atomically(path: &Path, identity: &MemberIdentity) -> Result<(), EtcdApiError> {
    let io = |action: &'static str, path: PathBuf| {
        move |source| EtcdApiError::IdentityIo {
            action,
            path,
            source,
        }
    };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(identity).expect("two integers always serialize");
    std::fs::write(&tmp, text).map_err(io("writing", tmp.clone()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", tmp.clone()))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into place", path.to_path_buf()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = MemberIdentity::load_or_create(dir.path()).unwrap();
        assert_ne!(first.cluster_id, 0);
        assert_ne!(first.member_id, 0);
        assert_eq!(MemberIdentity::load_or_create(dir.path()).unwrap(), first);
        assert!(!dir.path().join("etcd-member.json.tmp").exists());
    }

    #[test]
    fn random_identities_differ() {
        assert_ne!(MemberIdentity::random(), MemberIdentity::random());
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), "not json").unwrap();
        let err = MemberIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, EtcdApiError::IdentityMalformed { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(IDENTITY_FILE), "{err}");
        // And it is left alone.
        assert_eq!(
            std::fs::read_to_string(dir.path().join(IDENTITY_FILE)).unwrap(),
            "not json"
        );
    }
}
