//! Artifact launchables (p2's hoist launchables): a tarball fetched over
//! `http(s)://` or from a `file://` URL, checked against the manifest's
//! SHA-256 before a byte of it is unpacked, kept in a cache keyed by that
//! digest (a second pod, a restart or a replacement with the same artifact
//! downloads nothing), unpacked into the launchable's root, which then runs
//! its entry point.
//!
//! A cached file is only ever written whole and verified (downloaded to a
//! temporary name, renamed into place after the digest matched), so the
//! cache is trusted without hashing again. A root records the digest it was
//! unpacked from: a restarted agent adopting a running pod, or a pod
//! replaced by one with the same artifact, keeps its files untouched.

use std::path::{Path, PathBuf};

use drover_manifest::Artifact;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::AgentConfig;
use crate::error::{AgentError, Result, with_causes};

/// In a root: the digest of the artifact unpacked into it.
const UNPACKED_MARKER: &str = ".drover-artifact";

/// Fetches, verifies, caches and unpacks artifacts.
#[derive(Debug, Clone)]
pub(crate) struct Artifacts {
    cache: PathBuf,
    /// Built on the first download: most nodes run no artifact, and a
    /// client (its TLS roots, its pool) costs memory, a thousand times over
    /// in a hollow-nodes process.
    client: std::sync::Arc<tokio::sync::OnceCell<reqwest::Client>>,
    /// Extra roots, read at start so a bad CA file fails the agent, not a pod.
    roots: Vec<reqwest::Certificate>,
    max_bytes: u64,
    timeout: std::time::Duration,
}

impl Artifacts {
    pub(crate) fn new(config: &AgentConfig) -> Result<Artifacts> {
        let mut roots = Vec::new();
        for file in &config.artifact_ca_files {
            let pem = std::fs::read(file).map_err(AgentError::io(format!(
                "read the artifact CA file {}",
                file.display()
            )))?;
            roots.extend(reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AgentError::Config(format!(
                    "artifact CA file {} is not PEM certificates: {e}",
                    file.display()
                ))
            })?);
        }
        Ok(Artifacts {
            cache: config.artifact_cache(),
            client: Default::default(),
            roots,
            max_bytes: config.artifact_max_bytes,
            timeout: config.artifact_timeout,
        })
    }

    async fn client(&self) -> std::result::Result<&reqwest::Client, String> {
        self.client
            .get_or_try_init(|| async {
                // reqwest is built without a crypto provider so that only
                // ring is linked (as for the probes and tonic); it uses the
                // process default.
                let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
                let mut client = reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(30))
                    .user_agent(concat!("drover-agent/", env!("CARGO_PKG_VERSION")));
                for root in &self.roots {
                    client = client.add_root_certificate(root.clone());
                }
                client
                    .build()
                    .map_err(|e| format!("building the HTTP client: {}", with_causes(&e)))
            })
            .await
    }

    /// Makes `artifact` ready to run in `root` and returns its entry point.
    /// `launchable` names it in errors.
    pub(crate) async fn install(
        &self,
        launchable: &str,
        artifact: &Artifact,
        root: &Path,
    ) -> Result<PathBuf> {
        let fail = |problem: String| AgentError::Artifact {
            launchable: launchable.to_owned(),
            location: artifact.location.clone(),
            problem,
        };
        let tarball = self.fetch(artifact).await.map_err(fail)?;
        let (tarball, root_dir, digest) = (tarball, root.to_owned(), artifact.sha256.clone());
        tokio::task::spawn_blocking(move || unpack(&tarball, &root_dir, &digest))
            .await
            .map_err(|e| fail(format!("unpacking stopped: {e}")))?
            .map_err(fail)?;
        entry_point(root, &artifact.entry_point).map_err(fail)
    }

    /// The verified tarball in the cache, fetched if it is not there yet.
    async fn fetch(&self, artifact: &Artifact) -> std::result::Result<PathBuf, String> {
        let cached = self.cache.join(format!("{}.tar", artifact.sha256));
        if tokio::fs::try_exists(&cached).await.unwrap_or(false) {
            return Ok(cached);
        }
        tokio::fs::create_dir_all(&self.cache)
            .await
            .map_err(|e| format!("creating the cache {}: {e}", self.cache.display()))?;
        // Unique per fetch: two pods fetching one artifact never share a file.
        let partial = tempfile::Builder::new()
            .prefix(&format!(".{}.", artifact.sha256))
            .suffix(".partial")
            .tempfile_in(&self.cache)
            .map_err(|e| format!("creating a file in {}: {e}", self.cache.display()))?;
        let got = tokio::time::timeout(self.timeout, self.download(artifact, partial.path()))
            .await
            .map_err(|_| format!("the download took longer than {:?}", self.timeout))??;
        if got != artifact.sha256 {
            return Err(format!(
                "SHA-256 mismatch: the manifest says {}, the artifact is {got}; nothing was unpacked",
                artifact.sha256
            ));
        }
        partial
            .persist(&cached)
            .map_err(|e| format!("keeping it in the cache: {e}"))?;
        Ok(cached)
    }

    /// Copies the artifact to `to`, returning the SHA-256 of what was copied.
    async fn download(
        &self,
        artifact: &Artifact,
        to: &Path,
    ) -> std::result::Result<String, String> {
        let url = reqwest::Url::parse(&artifact.location).map_err(|e| format!("not a URL: {e}"))?;
        match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| "not a local file URL".to_owned())?;
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| format!("opening {}: {e}", path.display()))?;
                let chunks = tokio_util::io::ReaderStream::new(file)
                    .map(|chunk| chunk.map_err(|e| format!("reading {}: {e}", path.display())));
                self.copy(chunks, to).await
            }
            "http" | "https" => {
                let response = self
                    .client()
                    .await?
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("requesting it: {}", with_causes(&e)))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("the server answered {status}"));
                }
                if let Some(length) = response.content_length()
                    && length > self.max_bytes
                {
                    return Err(self.too_large());
                }
                let chunks = response
                    .bytes_stream()
                    .map(|chunk| chunk.map_err(|e| format!("downloading it: {}", with_causes(&e))));
                self.copy(chunks, to).await
            }
            other => Err(format!(
                "unsupported URL scheme {other:?} (http, https or file)"
            )),
        }
    }

    async fn copy<S>(&self, chunks: S, to: &Path) -> std::result::Result<String, String>
    where
        S: Stream<Item = std::result::Result<bytes::Bytes, String>>,
    {
        let mut out = tokio::fs::File::create(to)
            .await
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
        let mut hasher = Sha256::new();
        let mut copied = 0u64;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            copied += chunk.len() as u64;
            if copied > self.max_bytes {
                return Err(self.too_large());
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", to.display()))?;
        }
        out.sync_all()
            .await
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
        Ok(hex::encode(hasher.finalize()))
    }

    fn too_large(&self) -> String {
        format!(
            "larger than the agent's limit of {} bytes (artifact_max_bytes)",
            self.max_bytes
        )
    }
}

/// Unpacks `tarball` (plain or gzip) into `root`, unless `root` already
/// holds this very artifact. Unpacking goes to a sibling directory renamed
/// into place, so a root is never half-unpacked.
fn unpack(tarball: &Path, root: &Path, digest: &str) -> std::result::Result<(), String> {
    let marker = root.join(UNPACKED_MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|d| d.trim() == digest) {
        return Ok(());
    }
    let name = root
        .file_name()
        .ok_or_else(|| format!("{} has no name", root.display()))?;
    let staging = root.with_file_name(format!(".{}.unpacking", name.to_string_lossy()));
    for dir in [&staging, &root.to_owned()] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("clearing {}: {e}", dir.display())),
        }
    }
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let opened =
        std::fs::File::open(tarball).map_err(|e| format!("opening {}: {e}", tarball.display()))?;
    let mut reader = std::io::BufReader::new(opened);
    let gzip = std::io::BufRead::fill_buf(&mut reader)
        .map_err(|e| format!("reading {}: {e}", tarball.display()))?
        .starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn std::io::Read> = if gzip {
        Box::new(flate2::bufread::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    // `unpack` keeps every entry inside the directory (no absolute paths,
    // no `..`, no writing through a symlink it unpacked).
    archive
        .unpack(&staging)
        .map_err(|e| format!("unpacking it: {e} (is it a tar or tar.gz file?)"))?;
    std::fs::write(staging.join(UNPACKED_MARKER), digest)
        .map_err(|e| format!("marking {}: {e}", staging.display()))?;
    std::fs::rename(&staging, root).map_err(|e| format!("moving it to {}: {e}", root.display()))?;
    Ok(())
}

/// The entry point inside `root`: an executable file.
fn entry_point(root: &Path, entry: &str) -> std::result::Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(entry);
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("the entry point {entry} is not in the artifact ({e})"))?;
    if !meta.is_file() {
        return Err(format!("the entry point {entry} is not a file"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("the entry point {entry} is not executable"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip tarball with an executable `bin/launch` and a data file.
    fn tarball(gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, mode, body) in [
            ("bin/launch", 0o755, &b"#!/bin/sh\nexec sleep 30\n"[..]),
            ("share/data.txt", 0o644, &b"hello"[..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(mode);
            header.set_cksum();
            builder.append_data(&mut header, path, body).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn artifacts(data: &Path) -> Artifacts {
        Artifacts::new(&AgentConfig::new("n1".parse().unwrap(), data)).unwrap()
    }

    fn file_artifact(path: &Path, sha256: String) -> Artifact {
        Artifact {
            location: format!("file://{}", path.display()),
            sha256,
            entry_point: "bin/launch".into(),
        }
    }

    #[tokio::test]
    async fn file_artifacts_are_verified_cached_and_unpacked_once() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = artifacts(&dir.path().join("data"));
        for gzip in [true, false] {
            let bytes = tarball(gzip);
            let source = dir.path().join(format!("app-{gzip}.tar"));
            std::fs::write(&source, &bytes).unwrap();
            let artifact = file_artifact(&source, sha(&bytes));
            let root = dir.path().join(format!("root-{gzip}"));
            let entry = artifacts
                .install("web/app", &artifact, &root)
                .await
                .unwrap();
            assert_eq!(entry, root.join("bin/launch"));
            assert_eq!(
                std::fs::read_to_string(root.join("share/data.txt")).unwrap(),
                "hello"
            );
            // Cached by digest: the source can go; the root is kept as it is
            // (what the running pod wrote there stays).
            std::fs::remove_file(&source).unwrap();
            std::fs::write(root.join("state"), "mine").unwrap();
            artifacts
                .install("web/app", &artifact, &root)
                .await
                .unwrap();
            assert_eq!(std::fs::read_to_string(root.join("state")).unwrap(), "mine");
            assert!(
                dir.path()
                    .join("data/artifacts")
                    .join(format!("{}.tar", sha(&bytes)))
                    .exists()
            );
        }
    }

    #[tokio::test]
    async fn a_digest_mismatch_unpacks_nothing_and_caches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = artifacts(&dir.path().join("data"));
        let bytes = tarball(true);
        let source = dir.path().join("app.tar.gz");
        std::fs::write(&source, &bytes).unwrap();
        let wrong = sha(b"something else");
        let root = dir.path().join("root");
        let err = artifacts
            .install("web/app", &file_artifact(&source, wrong.clone()), &root)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SHA-256 mismatch") && err.contains(&wrong) && err.contains(&sha(&bytes)),
            "{err}"
        );
        assert!(!root.exists(), "nothing unpacked");
        let cached: Vec<_> = std::fs::read_dir(dir.path().join("data/artifacts"))
            .unwrap()
            .collect();
        assert!(cached.is_empty(), "nothing cached: {cached:?}");
    }

    #[tokio::test]
    async fn bad_artifacts_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let mut artifacts = artifacts(&dir.path().join("data"));
        let root = dir.path().join("root");
        let missing = file_artifact(&dir.path().join("nope.tar"), sha(b""));
        let err = artifacts.install("w/a", &missing, &root).await.unwrap_err();
        assert!(err.to_string().contains("nope.tar"), "{err}");

        let not_tar = dir.path().join("not.tar");
        std::fs::write(&not_tar, b"just text, no tar").unwrap();
        let err = artifacts
            .install(
                "w/a",
                &file_artifact(&not_tar, sha(b"just text, no tar")),
                &root,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unpacking"), "{err}");

        let bytes = tarball(false);
        let source = dir.path().join("app.tar");
        std::fs::write(&source, &bytes).unwrap();
        let mut no_entry = file_artifact(&source, sha(&bytes));
        no_entry.entry_point = "bin/start".into();
        let err = artifacts
            .install("w/a", &no_entry, &root)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("bin/start is not in the artifact"),
            "{err}"
        );
        let mut not_executable = no_entry.clone();
        not_executable.entry_point = "share/data.txt".into();
        let err = artifacts
            .install("w/a", &not_executable, &root)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not executable"), "{err}");

        // (The cache is keyed by digest alone: use one not cached yet.)
        let mut ftp = file_artifact(&source, sha(b"elsewhere"));
        ftp.location = "ftp://example.com/app.tar".into();
        let err = artifacts.install("w/a", &ftp, &root).await.unwrap_err();
        assert!(err.to_string().contains("unsupported URL scheme"), "{err}");

        artifacts.max_bytes = 100;
        let big = file_artifact(&source, sha(&bytes));
        std::fs::remove_dir_all(dir.path().join("data/artifacts")).unwrap();
        let err = artifacts
            .install("w/a", &big, &dir.path().join("r2"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("limit of 100 bytes"), "{err}");
    }
}
