//! The BM25 side: a tantivy index with one analysed text field (title and text) and each
//! document's stable key (a u64, indexed for deletes and a fast field for hits).
//!
//! tantivy is used as is: it scores BM25 (k1 1.2, b 0.75, document lengths kept to one byte
//! as Lucene does), writes segments atomically, deletes by term and memory-maps its files.

use crate::analyzer::{analyzer, AnalyzerParams, ANALYZER};
use crate::error::{Result, RetrievalError};
use std::path::{Path, PathBuf};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

const BODY: &str = "body";
const KEY: &str = "key";
/// Writer memory budget (tantivy's per-thread minimum is 15 MB).
const WRITER_BYTES: usize = 64_000_000;

fn schema() -> Schema {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER)
        .set_index_option(IndexRecordOption::WithFreqs);
    builder.add_text_field(BODY, TextOptions::default().set_indexing_options(indexing));
    builder.add_u64_field(KEY, NumericOptions::default().set_indexed().set_fast());
    builder.build()
}

/// An open BM25 index.
pub(crate) struct Lexical {
    path: PathBuf,
    reader: IndexReader,
    body: Field,
    params: AnalyzerParams,
}

/// Applies `delete` (keys) and `add` (key, text) to the index in `dir` (created when it holds
/// none) and commits.
pub(crate) fn write(
    dir: &Path,
    params: AnalyzerParams,
    delete: &[u64],
    add: &[(u64, String)],
) -> Result<()> {
    let err = |e| RetrievalError::lexical(dir, e);
    let index = if dir.join("meta.json").exists() {
        Index::open_in_dir(dir).map_err(err)?
    } else {
        std::fs::create_dir_all(dir).map_err(|e| RetrievalError::io(dir, e))?;
        Index::create_in_dir(dir, schema()).map_err(err)?
    };
    index.tokenizers().register(ANALYZER, analyzer(params));
    let schema = index.schema();
    let (body, key) = fields(&schema, dir)?;
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(1, WRITER_BYTES)
        .map_err(err)?;
    for &k in delete {
        writer.delete_term(Term::from_field_u64(key, k));
    }
    for (k, text) in add {
        let mut doc = TantivyDocument::default();
        doc.add_text(body, text);
        doc.add_u64(key, *k);
        writer.add_document(doc).map_err(err)?;
    }
    writer.commit().map_err(err)?;
    writer.wait_merging_threads().map_err(err)?;
    Ok(())
}

fn fields(schema: &Schema, dir: &Path) -> Result<(Field, Field)> {
    let get = |name: &str| {
        schema.get_field(name).map_err(|_| RetrievalError::Corrupt {
            path: dir.to_path_buf(),
            reason: format!("no field {name:?} in the BM25 schema"),
        })
    };
    Ok((get(BODY)?, get(KEY)?))
}

impl Lexical {
    /// Opens the index in `dir`.
    pub(crate) fn open(dir: &Path, params: AnalyzerParams) -> Result<Self> {
        let err = |e| RetrievalError::lexical(dir, e);
        let index = Index::open_in_dir(dir).map_err(err)?;
        index.tokenizers().register(ANALYZER, analyzer(params));
        let (body, _) = fields(&index.schema(), dir)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(err)?;
        Ok(Lexical {
            path: dir.to_path_buf(),
            reader,
            body,
            params,
        })
    }

    /// The `k` best documents for `query` by BM25, as (key, score), best first; a query
    /// with no term left after analysis finds nothing.
    pub(crate) fn search(&self, query: &str, k: usize) -> Result<Vec<(u64, f32)>> {
        let terms = crate::analyzer::terms(query, self.params);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let term = Term::from_field_text(self.body, t);
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let err = |e| RetrievalError::lexical(&self.path, e);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(k).order_by_score())
            .map_err(err)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let segment = searcher.segment_reader(address.segment_ord);
            let keys = segment.fast_fields().u64(KEY).map_err(err)?;
            let key = keys
                .first(address.doc_id)
                .ok_or_else(|| RetrievalError::Corrupt {
                    path: self.path.clone(),
                    reason: "a document has no key".into(),
                })?;
            out.push((key, score));
        }
        Ok(out)
    }

    /// Documents in the index (deletes applied).
    pub(crate) fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}
