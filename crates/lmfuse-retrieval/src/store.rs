//! The index folder: a manifest (`index.json`) naming the current generation, and one folder
//! per generation holding the BM25 index (`lexical/`), the documents (`documents.jsonl`) and
//! the passage vectors (`dense.safetensors`, with an HNSW graph over them in `ann/` when the
//! index's policy asks for one).
//!
//! A change writes a whole new generation beside the current one (the BM25 files hard-linked,
//! since tantivy never rewrites a segment), then swaps the manifest atomically, then removes
//! the old generation. A writer killed at any point leaves the old manifest and its
//! generation intact; the next writer clears the half-written folder.

use crate::analyzer::AnalyzerParams;
use crate::ann::{Ann, AnnDigest, AnnPolicy};
use crate::dense::{self, Dense};
use crate::error::{Result, RetrievalError};
use crate::lexical::{self, Lexical};
use crate::passages::{split_passages, PassageParams};
use lmfuse_data::retrieval::Document;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The manifest's `format`.
pub const FORMAT: &str = "lmfuse-index";
/// The manifest's `version` this lmfuse writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in an index folder.
pub const MANIFEST: &str = "index.json";
const DOCUMENTS: &str = "documents.jsonl";
const DENSE: &str = "dense.safetensors";
const LEXICAL: &str = "lexical";
const ANN: &str = "ann";

/// The encoder that made an index's vectors, as recorded by whoever encodes (the pipeline):
/// queries must be encoded by the same one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseRecord {
    /// The model as named by the user.
    pub model: String,
    /// sha256 of its weights.
    pub weights_sha256: String,
    /// Vector dimension.
    pub dim: usize,
    /// Encoder settings (pooling, prefixes, length), free-form.
    pub settings: serde_json::Value,
}

/// How an index is built: fixed when it is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// BM25 text analysis.
    pub analyzer: AnalyzerParams,
    /// Passage cutting for the vectors.
    pub passages: PassageParams,
    /// The encoder; `None`: BM25 only.
    pub dense: Option<DenseRecord>,
    /// An approximate (HNSW) graph over the vectors; `None`: exact search only.
    #[serde(default)]
    pub ann: Option<AnnPolicy>,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexManifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub version: u32,
    /// The current generation (its folder is `gen-NNNNNN`).
    pub generation: u64,
    /// How it is built.
    pub spec: IndexSpec,
    /// Documents.
    pub documents: usize,
    /// Passages with vectors (0 without vectors).
    pub passages: usize,
    /// The next document key (keys are never reused).
    pub next_key: u64,
    /// The HNSW graph (`ann/`) of this generation over its passage vectors, if it has one.
    #[serde(default)]
    pub ann: Option<AnnDigest>,
    /// The lmfuse version that wrote it.
    pub written_by: String,
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDoc {
    /// Stable key (BM25's handle).
    pub key: u64,
    /// The corpus id.
    pub id: String,
    /// Title (may be empty).
    pub title: String,
    /// Text.
    pub text: String,
    /// Its passages with vectors.
    pub passages: usize,
}

/// A change to an index: documents to delete (by id), then documents to add with the vectors
/// of their passages ([`Change::passages_to_encode`]'s texts, row after row).
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Ids to delete.
    pub delete: Vec<String>,
    /// Documents to add.
    pub add: Vec<Document>,
    /// Vectors of the added documents' passages (empty without vectors).
    pub vectors: Vec<f32>,
}

impl Change {
    /// The passage texts of the added documents, in order, to be encoded for
    /// [`Change::vectors`].
    pub fn passages_to_encode(&self, spec: &IndexSpec) -> Vec<String> {
        self.add
            .iter()
            .flat_map(|d| split_passages(&d.title, &d.text, spec.passages))
            .collect()
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    lmfuse_data::atomic_write(path, |w| w.write_all(bytes)).map_err(|e| RetrievalError::io(path, e))
}

/// The folder of generation `generation` in a versioned folder `dir` (`gen-NNNNNN`).
pub fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation:06}"))
}

/// Reads `index.json` of `dir`.
pub fn read_manifest(dir: &Path) -> Result<IndexManifest> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RetrievalError::NotAnIndex {
                path: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(RetrievalError::io(&path, e)),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| RetrievalError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let format = value["format"].as_str().unwrap_or("?");
    let version = value["version"].as_u64().unwrap_or(0);
    if format != FORMAT || version != u64::from(FORMAT_VERSION) {
        return Err(RetrievalError::Version {
            path,
            found: format!("{format} version {version}"),
            format: FORMAT,
            expected: FORMAT_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| RetrievalError::Corrupt {
        path,
        reason: e.to_string(),
    })
}

fn read_documents(path: &Path) -> Result<Vec<StoredDoc>> {
    let file = std::fs::File::open(path).map_err(|e| RetrievalError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| RetrievalError::io(path, e))?;
        let doc = serde_json::from_str(&line).map_err(|e| RetrievalError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        out.push(doc);
    }
    Ok(out)
}

fn write_documents(path: &Path, docs: &[StoredDoc]) -> Result<()> {
    lmfuse_data::atomic_write(path, |w| {
        for d in docs {
            serde_json::to_writer(&mut *w, d)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
    .map_err(|e| RetrievalError::io(path, e))
}

/// Hard-links every file of `from` into `to` (tantivy never rewrites a file in place, and
/// replaces its manifests by rename, so the old generation is never touched).
fn link_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| RetrievalError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| RetrievalError::io(from, e))? {
        let entry = entry.map_err(|e| RetrievalError::io(from, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        let target = to.join(&name);
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).map_err(|e| RetrievalError::io(&target, e))?;
        }
    }
    Ok(())
}

/// Removes generation folders of `dir` other than `keep` (left by a finished change or a
/// killed one).
pub fn clear_other_generations(dir: &Path, keep: Option<u64>) -> Result<()> {
    let keep = keep.map(|g| generation_dir(dir, g));
    for entry in std::fs::read_dir(dir).map_err(|e| RetrievalError::io(dir, e))? {
        let path = entry.map_err(|e| RetrievalError::io(dir, e))?.path();
        let is_gen = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("gen-"));
        if is_gen && Some(&path) != keep.as_ref() {
            std::fs::remove_dir_all(&path).map_err(|e| RetrievalError::io(&path, e))?;
        }
    }
    Ok(())
}

/// The documents and vectors a change leaves, checked.
struct Next {
    docs: Vec<StoredDoc>,
    vectors: Vec<f32>,
    passage_doc: Vec<u32>,
    deleted_keys: Vec<u64>,
    added: Vec<(u64, String)>,
    next_key: u64,
}

fn apply(base: Option<&Index>, spec: &IndexSpec, change: Change) -> Result<Next> {
    let old: &[StoredDoc] = base.map_or(&[], |b| &b.docs);
    let mut present: HashSet<&str> = old.iter().map(|d| d.id.as_str()).collect();
    let mut deleted = HashSet::new();
    for id in &change.delete {
        if !present.remove(id.as_str()) {
            return Err(RetrievalError::UnknownId { id: id.clone() });
        }
        deleted.insert(id.as_str());
    }
    for d in &change.add {
        if !present.insert(d.id.as_str()) {
            return Err(RetrievalError::DuplicateId { id: d.id.clone() });
        }
    }
    if present.is_empty() {
        return Err(RetrievalError::Empty);
    }
    let dim = spec.dense.as_ref().map_or(0, |d| d.dim);
    let counts: Vec<usize> = change
        .add
        .iter()
        .map(|d| match dim {
            0 => 0,
            _ => split_passages(&d.title, &d.text, spec.passages).len(),
        })
        .collect();
    let expected = counts.iter().sum::<usize>() * dim;
    if change.vectors.len() != expected {
        return Err(RetrievalError::Vectors {
            found: change.vectors.len(),
            expected,
            what: format!("{} passages × {dim}", counts.iter().sum::<usize>()),
        });
    }
    let mut next = Next {
        docs: Vec::new(),
        vectors: Vec::new(),
        passage_doc: Vec::new(),
        deleted_keys: Vec::new(),
        added: Vec::new(),
        next_key: base.map_or(0, |b| b.manifest.next_key),
    };
    keep_old(base, &deleted, dim, &mut next);
    let mut rows = change.vectors.chunks_exact(dim.max(1));
    for (d, n) in change.add.into_iter().zip(counts) {
        let ordinal = next.docs.len() as u32;
        for _ in 0..n {
            let mut v = rows.next().expect("counted above").to_vec();
            dense::normalize(&mut v);
            next.vectors.extend_from_slice(&v);
            next.passage_doc.push(ordinal);
        }
        next.added.push((next.next_key, d.full_text()));
        next.docs.push(StoredDoc {
            key: next.next_key,
            id: d.id,
            title: d.title,
            text: d.text,
            passages: n,
        });
        next.next_key += 1;
    }
    Ok(next)
}

/// Copies the kept documents of `base` and their vectors into `next`.
fn keep_old(base: Option<&Index>, deleted: &HashSet<&str>, dim: usize, next: &mut Next) {
    let Some(base) = base else { return };
    let (vectors, owners): (&[f32], &[u32]) = match &base.dense {
        Some(d) => (d.vectors(), d.passage_doc()),
        None => (&[], &[]),
    };
    let mut new_ordinal = vec![u32::MAX; base.docs.len()];
    for (i, d) in base.docs.iter().enumerate() {
        if deleted.contains(d.id.as_str()) {
            next.deleted_keys.push(d.key);
        } else {
            new_ordinal[i] = next.docs.len() as u32;
            next.docs.push(d.clone());
        }
    }
    for (row, &owner) in vectors.chunks_exact(dim.max(1)).zip(owners) {
        let ordinal = new_ordinal[owner as usize];
        if ordinal != u32::MAX {
            next.vectors.extend_from_slice(row);
            next.passage_doc.push(ordinal);
        }
    }
}

/// Writes a new generation of the index in `dir` with `change` applied: on top of the current
/// generation when `base` is it, from nothing otherwise (a rebuild: the old generation stays
/// readable until the new manifest is in place). Returns the new manifest.
pub fn write_index(
    dir: &Path,
    spec: &IndexSpec,
    base: Option<&Index>,
    change: Change,
) -> Result<IndexManifest> {
    std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
    let current = read_manifest(dir).ok();
    clear_other_generations(dir, current.as_ref().map(|m| m.generation))?;
    let generation = current.as_ref().map_or(1, |m| m.generation + 1);
    let gen_dir = generation_dir(dir, generation);
    let next = apply(base, spec, change)?;
    let lexical_dir = gen_dir.join(LEXICAL);
    if let Some(b) = base {
        link_files(&b.generation_dir().join(LEXICAL), &lexical_dir)?;
    }
    lexical::write(&lexical_dir, spec.analyzer, &next.deleted_keys, &next.added)?;
    write_documents(&gen_dir.join(DOCUMENTS), &next.docs)?;
    let mut with_ann = None;
    if let Some(d) = &spec.dense {
        dense::write(
            &gen_dir.join(DENSE),
            d.dim,
            &next.vectors,
            &next.passage_doc,
        )?;
        if let Some(policy) = spec.ann.filter(|p| p.applies(next.passage_doc.len())) {
            // The graph is rebuilt whole on every change: HNSW cannot delete a node.
            let graph = Ann::build(&next.vectors, d.dim, policy.params)?;
            with_ann = Some(graph.save(&gen_dir.join(ANN))?);
        }
    }
    sync_dir(&gen_dir)?;
    let manifest = IndexManifest {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        generation,
        spec: spec.clone(),
        documents: next.docs.len(),
        passages: next.passage_doc.len(),
        next_key: next.next_key,
        ann: with_ann,
        written_by: env!("CARGO_PKG_VERSION").into(),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    write_atomically(&dir.join(MANIFEST), &json)?;
    clear_other_generations(dir, Some(generation))?;
    Ok(manifest)
}

fn sync_dir(dir: &Path) -> Result<()> {
    for sub in [dir.join(LEXICAL), dir.to_path_buf()] {
        std::fs::File::open(&sub)
            .and_then(|f| f.sync_all())
            .map_err(|e| RetrievalError::io(&sub, e))?;
    }
    Ok(())
}

/// Passages asked of the HNSW graph per document wanted.
const PASSAGES_PER_HIT: usize = 4;

/// An open index: documents in memory, BM25 and vectors on disk.
pub struct Index {
    dir: PathBuf,
    manifest: IndexManifest,
    docs: Vec<StoredDoc>,
    by_key: HashMap<u64, usize>,
    lexical: Lexical,
    dense: Option<Dense>,
    ann: Option<Ann>,
    /// Each document's analysed terms, filled on first use by the learned ranker's features
    /// (analysing a candidate's text on every query cost most of a ranked search).
    terms: Vec<std::sync::OnceLock<DocTerms>>,
}

/// A document's distinct analysed terms: of its title, and of its title and text.
#[derive(Debug)]
pub(crate) struct DocTerms {
    pub(crate) title: std::collections::HashSet<String>,
    pub(crate) all: std::collections::HashSet<String>,
}

impl Index {
    /// The analysed terms of document `doc`, computed once.
    pub(crate) fn doc_terms(&self, doc: usize) -> &DocTerms {
        self.terms[doc].get_or_init(|| {
            let params = self.manifest.spec.analyzer;
            let d = &self.docs[doc];
            let title: std::collections::HashSet<String> = crate::analyzer::terms(&d.title, params)
                .into_iter()
                .collect();
            // Title and text are analysed apart: the space between them ends every token, so
            // their union is the terms of "title text".
            let mut all = title.clone();
            all.extend(crate::analyzer::terms(&d.text, params));
            DocTerms { title, all }
        })
    }

    /// Opens the current generation of the index in `dir`, checking its parts agree.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = read_manifest(dir)?;
        let gen_dir = generation_dir(dir, manifest.generation);
        let docs = read_documents(&gen_dir.join(DOCUMENTS))?;
        let lexical = Lexical::open(&gen_dir.join(LEXICAL), manifest.spec.analyzer)?;
        let dense = match &manifest.spec.dense {
            Some(_) => Some(Dense::open(&gen_dir.join(DENSE))?),
            None => None,
        };
        let ann = match (&manifest.ann, manifest.spec.ann) {
            (Some(digest), Some(policy)) => {
                Some(Ann::load(&gen_dir.join(ANN), policy.params, digest)?)
            }
            _ => None,
        };
        let index = Index {
            dir: dir.to_path_buf(),
            terms: docs.iter().map(|_| std::sync::OnceLock::new()).collect(),
            by_key: docs.iter().enumerate().map(|(i, d)| (d.key, i)).collect(),
            manifest,
            docs,
            lexical,
            dense,
            ann,
        };
        index.check()?;
        Ok(index)
    }

    fn check(&self) -> Result<()> {
        let corrupt = |path: PathBuf, reason: String| Err(RetrievalError::Corrupt { path, reason });
        let gen_dir = self.generation_dir();
        if self.docs.len() != self.manifest.documents
            || self.lexical.documents() != self.docs.len() as u64
        {
            return corrupt(
                gen_dir,
                format!(
                    "the manifest says {} documents, the document table holds {}, BM25 {}",
                    self.manifest.documents,
                    self.docs.len(),
                    self.lexical.documents()
                ),
            );
        }
        if let (Some(d), Some(rec)) = (&self.dense, &self.manifest.spec.dense) {
            let owners_ok = d
                .passage_doc()
                .iter()
                .all(|&o| (o as usize) < self.docs.len());
            if d.dim() != rec.dim || d.passage_doc().len() != self.manifest.passages || !owners_ok {
                return corrupt(
                    d.path().to_path_buf(),
                    "vectors do not fit the manifest or the documents".into(),
                );
            }
        }
        let graph = self.ann.as_ref().map_or(0, Ann::len);
        if self.ann.is_some() && graph != self.manifest.passages {
            return corrupt(
                self.generation_dir().join(ANN),
                format!(
                    "the HNSW graph holds {graph} vectors, the index {} passages",
                    self.manifest.passages
                ),
            );
        }
        Ok(())
    }

    /// The folder of the current generation.
    fn generation_dir(&self) -> PathBuf {
        generation_dir(&self.dir, self.manifest.generation)
    }

    /// The manifest.
    pub fn manifest(&self) -> &IndexManifest {
        &self.manifest
    }

    /// The documents, in index order (hits refer to them by position).
    pub fn documents(&self) -> &[StoredDoc] {
        &self.docs
    }

    /// The `k` best documents for `query` by BM25, as (position, score), best first.
    pub fn bm25(&self, query: &str, k: usize) -> Result<Vec<(usize, f32)>> {
        let hits = self.lexical.search(query, k)?;
        hits.into_iter()
            .map(|(key, score)| match self.by_key.get(&key) {
                Some(&i) => Ok((i, score)),
                None => Err(RetrievalError::Corrupt {
                    path: self.generation_dir(),
                    reason: format!("BM25 returned key {key}, which no document has"),
                }),
            })
            .collect()
    }

    /// The `k` documents whose best passage is nearest `query` (cosine), best first: from
    /// the HNSW graph when the index has one (approximate), else over every passage.
    pub fn dense(&self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        let Some(ann) = &self.ann else {
            return Ok(crate::dense::top_k(&self.dense_scores(query)?, k));
        };
        let q = self.unit_query(query)?;
        let owners = self
            .dense_store()
            .ok_or(RetrievalError::NoDense)?
            .passage_doc();
        // Several passages may share a document: ask for more passages than documents.
        let passages = (k * PASSAGES_PER_HIT).min(owners.len());
        let mut best: HashMap<usize, f32> = HashMap::new();
        for (row, score) in ann.search_with(&q, passages, ann.params().ef_search.max(passages)) {
            let slot = best
                .entry(owners[row] as usize)
                .or_insert(f32::NEG_INFINITY);
            *slot = slot.max(score);
        }
        let mut hits: Vec<(usize, f32)> = best.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Whether dense search goes through an HNSW graph.
    pub fn is_approximate(&self) -> bool {
        self.ann.is_some()
    }

    pub(crate) fn dense_store(&self) -> Option<&Dense> {
        self.dense.as_ref()
    }
}
