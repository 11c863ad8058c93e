//! A persistent, crash-safe cache of sentence embeddings, in one SQLite file.
//!
//! Rows are keyed by the encoder's [`EncoderFingerprint::cache_key`] (weights sha256, pooling,
//! normalisation, maximum length) and the sha256 of the text, so re-running on the same texts
//! with the same encoder re-encodes nothing. SQLite in WAL mode with one transaction per
//! [`EmbeddingCache::put_many`] keeps the file consistent when the process is killed at any
//! point: a batch is either all there or not there.
//!
//! [`EncoderFingerprint::cache_key`]: lmfuse_core::EncoderFingerprint::cache_key

use lmfuse_core::TextStats;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable naming the cache folder.
pub const CACHE_DIR_ENV: &str = "LMFUSE_CACHE_DIR";

/// File name of the database inside the cache folder.
pub const DB_FILE: &str = "embeddings.sqlite3";

/// Version of the table layout, stored in SQLite's `user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache folder could not be created.
    #[error("cannot create cache folder {path}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed. Here and above, the cause is the [`source`](std::error::Error::source),
    /// not repeated in the message.
    #[error("embedding cache {path} failed")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by another version of lmfuse.
    #[error(
        "embedding cache {path} has format version {found}, this lmfuse uses {SCHEMA_VERSION}; \
         delete the file or point {CACHE_DIR_ENV} elsewhere"
    )]
    Version {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// A stored vector does not have the length its row says.
    #[error("embedding cache {path}: a stored vector has {bytes} bytes, expected {expected}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Bytes stored.
        bytes: usize,
        /// Bytes expected.
        expected: usize,
    },
}

/// One cached embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedEmbedding {
    /// The sentence vector.
    pub vector: Vec<f32>,
    /// Token statistics of the text when it was encoded.
    pub stats: TextStats,
}

/// An open embedding cache.
pub struct EmbeddingCache {
    conn: Connection,
    path: PathBuf,
}

/// The cache folder: `$LMFUSE_CACHE_DIR`, else `$XDG_CACHE_HOME/lmfuse`, else
/// `~/.cache/lmfuse`, else `.lmfuse-cache` in the working folder.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lmfuse");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".cache").join("lmfuse");
    }
    PathBuf::from(".lmfuse-cache")
}

fn text_hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl EmbeddingCache {
    /// Opens (creating if needed) the cache in folder `dir`.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(|source| CacheError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let sql = |source| CacheError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sql)?;
        // WAL: readers never block the writer, and a killed writer loses at most its open
        // transaction. synchronous=NORMAL is corruption-safe in WAL mode.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        match version {
            0 => {
                conn.execute_batch(&format!(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS embeddings (
                         model TEXT NOT NULL,
                         text_sha256 BLOB NOT NULL,
                         dim INTEGER NOT NULL,
                         tokens INTEGER NOT NULL,
                         truncated INTEGER NOT NULL,
                         vector BLOB NOT NULL,
                         PRIMARY KEY (model, text_sha256)
                     ) WITHOUT ROWID;
                     PRAGMA user_version = {SCHEMA_VERSION};
                     COMMIT;"
                ))
                .map_err(sql)?;
            }
            SCHEMA_VERSION => {}
            found => return Err(CacheError::Version { path, found }),
        }
        Ok(Self { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> CacheError {
        CacheError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Looks up `texts` under encoder key `model`; one entry per text, `None` for misses.
    pub fn get_many(
        &self,
        model: &str,
        texts: &[&str],
    ) -> Result<Vec<Option<CachedEmbedding>>, CacheError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT dim, tokens, truncated, vector FROM embeddings
                 WHERE model = ?1 AND text_sha256 = ?2",
            )
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::with_capacity(texts.len());
        for text in texts {
            let row = stmt
                .query_row(params![model, &text_hash(text)[..]], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .optional()
                .map_err(|e| self.sql(e))?;
            out.push(match row {
                None => None,
                Some((dim, tokens, truncated, blob)) => {
                    let expected = dim.max(0) as usize * 4;
                    if blob.len() != expected {
                        return Err(CacheError::Corrupt {
                            path: self.path.clone(),
                            bytes: blob.len(),
                            expected,
                        });
                    }
                    Some(CachedEmbedding {
                        vector: blob
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                        stats: TextStats {
                            tokens: tokens.max(0) as usize,
                            truncated,
                        },
                    })
                }
            });
        }
        Ok(out)
    }

    /// Stores `items` (text, vector, stats) under encoder key `model` in one transaction.
    pub fn put_many(
        &mut self,
        model: &str,
        items: &[(&str, &[f32], TextStats)],
    ) -> Result<(), CacheError> {
        let path = self.path.clone();
        let sql = |source| CacheError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO embeddings
                     (model, text_sha256, dim, tokens, truncated, vector)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql)?;
            let mut blob = Vec::new();
            for (text, vector, stats) in items {
                blob.clear();
                for v in *vector {
                    blob.extend_from_slice(&v.to_le_bytes());
                }
                stmt.execute(params![
                    model,
                    &text_hash(text)[..],
                    vector.len() as i64,
                    stats.tokens as i64,
                    stats.truncated,
                    &blob
                ])
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// Number of vectors stored under encoder key `model`.
    pub fn count(&self, model: &str) -> Result<usize, CacheError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM embeddings WHERE model = ?1",
                params![model],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.sql(e))
    }

    /// Number of vectors stored, over all encoders.
    pub fn total_rows(&self) -> Result<usize, CacheError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM embeddings", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(|e| self.sql(e))
    }

    /// Runs SQLite's integrity check; `Ok(true)` when the file is sound.
    pub fn integrity_ok(&self) -> Result<bool, CacheError> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        Ok(result == "ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(tokens: usize) -> TextStats {
        TextStats {
            tokens,
            truncated: tokens > 3,
        }
    }

    #[test]
    fn stores_and_finds_by_model_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbeddingCache::open(dir.path()).unwrap();
        cache
            .put_many(
                "m1",
                &[("a", &[1.0, 2.0], stats(2)), ("b", &[3.0, -4.5], stats(5))],
            )
            .unwrap();
        let got = cache.get_many("m1", &["b", "zz", "a"]).unwrap();
        assert_eq!(got[0].as_ref().unwrap().vector, vec![3.0, -4.5]);
        assert!(got[0].as_ref().unwrap().stats.truncated);
        assert!(got[1].is_none());
        assert_eq!(got[2].as_ref().unwrap().stats.tokens, 2);
        assert!(cache.get_many("m2", &["a"]).unwrap()[0].is_none());
        assert_eq!(cache.count("m1").unwrap(), 2);
        cache
            .put_many("m2", &[("a", &[0.5, 0.5], stats(1))])
            .unwrap();
        assert_eq!(cache.total_rows().unwrap(), 3);
        drop(cache);
        let cache = EmbeddingCache::open(dir.path()).unwrap();
        assert_eq!(cache.count("m1").unwrap(), 2);
        assert!(cache.integrity_ok().unwrap());
    }

    #[test]
    fn refuses_other_format_versions() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddingCache::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = EmbeddingCache::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("format version 99"), "{e}");
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            b"this is not a database, just text",
        )
        .unwrap();
        let e = EmbeddingCache::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains(DB_FILE), "{e}");
    }
}
