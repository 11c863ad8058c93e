//! `lmfuse index` and `lmfuse search`: build, change and query search indexes, and score them
//! on judgements (the pipeline's [`retrieval`]).

use crate::classify::CacheArgs;
use crate::output::write_lines;
use crate::progress::Bars;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use lmfuse_data::retrieval::CorpusColumns;
use lmfuse_pipeline::encoders::EncoderChoice;
use lmfuse_pipeline::ranker::{RankerKind, RankerSpec};
use lmfuse_pipeline::retrieval::{
    self, DenseSpec, IndexBuildSpec, IndexSummary, Reranker, SearchEvalReport, SearchEvalSpec,
    Searcher,
};
use lmfuse_retrieval::{fusion, AnalyzerParams, AnnParams, AnnPolicy, PassageParams, SearchMode};
use std::path::PathBuf;

/// `lmfuse index` subcommands.
#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Build an index from a corpus: BM25 over title and text, and dense vectors of its
    /// passages unless --bm25-only. Replaces an index already at --out only once the new one
    /// is complete.
    Build(IndexBuildArgs),
    /// Add the documents of a corpus file to an index (ids must be new).
    Add(IndexAddArgs),
    /// Delete documents from an index by id.
    Delete(IndexDeleteArgs),
    /// Print an index's manifest.
    Info(IndexInfoArgs),
}

/// Which columns of a corpus file hold what.
#[derive(Args, Debug, Clone)]
pub struct CorpusArgs {
    /// The id column (default: id, else _id as in BEIR files).
    #[arg(long)]
    id_col: Option<String>,
    /// The title column; "" for none.
    #[arg(long, default_value = "title")]
    title_col: String,
    /// The text column.
    #[arg(long, default_value = "text")]
    text_col: String,
}

impl CorpusArgs {
    fn columns(&self) -> CorpusColumns {
        CorpusColumns {
            id: self.id_col.clone(),
            title: (!self.title_col.is_empty()).then(|| self.title_col.clone()),
            text: self.text_col.clone(),
        }
    }
}

/// `lmfuse index build`.
#[derive(Args, Debug)]
pub struct IndexBuildArgs {
    /// The corpus: JSONL, CSV, TSV or Parquet rows with an id, a title and a text.
    #[arg(long)]
    corpus: PathBuf,
    /// The index folder to write.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    columns: CorpusArgs,
    /// BM25 only: no encoder, no vectors.
    #[arg(long)]
    bm25_only: bool,
    /// Encoder: a local folder or a Hugging Face id; by default models/all-MiniLM-L6-v2.
    #[arg(long, env = "LMFUSE_MODEL")]
    model: Option<String>,
    /// Maximum tokens per passage instead of the model's max_seq_length.
    #[arg(long)]
    max_length: Option<usize>,
    /// Put before every query, e.g. "query: " for e5 (default: the model's default prompt).
    #[arg(long)]
    query_prefix: Option<String>,
    /// Put before every passage, e.g. "passage: " for e5 (default: the model's default prompt).
    #[arg(long)]
    passage_prefix: Option<String>,
    /// Words per passage (a Han character counts as a word); default: half the encoder's
    /// window in tokens.
    #[arg(long)]
    passage_words: Option<usize>,
    /// Words shared by consecutive passages; default: a quarter of --passage-words.
    #[arg(long)]
    passage_overlap: Option<usize>,
    /// Keep English stop words in BM25.
    #[arg(long)]
    keep_stop_words: bool,
    /// Do not stem English words in BM25.
    #[arg(long)]
    no_stem: bool,
    /// Approximate dense search through an HNSW graph: `auto` from 100,000 passages on
    /// (kept up to date by later adds and deletes), `on` always, `off` never (exact search).
    #[arg(long, value_enum, default_value_t = AnnArg::Auto)]
    ann: AnnArg,
    /// HNSW neighbours per node (M).
    #[arg(long, default_value_t = AnnParams::default().m)]
    ann_m: usize,
    /// HNSW candidates while inserting.
    #[arg(long, default_value_t = AnnParams::default().ef_construction)]
    ann_ef_construction: usize,
    /// HNSW candidates while searching.
    #[arg(long, default_value_t = AnnParams::default().ef_search)]
    ann_ef_search: usize,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// When an index keeps an HNSW graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnnArg {
    /// From 100,000 passages on.
    Auto,
    /// Always.
    On,
    /// Never: exact search.
    Off,
}

impl IndexBuildArgs {
    fn ann(&self) -> Option<AnnPolicy> {
        let params = AnnParams {
            m: self.ann_m,
            ef_construction: self.ann_ef_construction,
            ef_search: self.ann_ef_search,
        };
        let min_passages = match self.ann {
            AnnArg::Off => return None,
            AnnArg::On => 0,
            AnnArg::Auto => AnnPolicy::AUTO_MIN_PASSAGES,
        };
        Some(AnnPolicy {
            params,
            min_passages,
        })
    }

    fn spec(&self) -> IndexBuildSpec {
        let passages = self.passage_words.map(|words| PassageParams {
            words,
            overlap: self.passage_overlap.unwrap_or(words / 4),
        });
        IndexBuildSpec {
            corpus: self.corpus.clone(),
            format: None,
            columns: self.columns.columns(),
            analyzer: AnalyzerParams {
                stop_words: !self.keep_stop_words,
                stem: !self.no_stem,
            },
            dense: (!self.bm25_only).then(|| DenseSpec {
                encoder: EncoderChoice {
                    model: self.model.clone(),
                    max_length: self.max_length,
                    ..EncoderChoice::default()
                },
                query_prefix: self.query_prefix.clone(),
                passage_prefix: self.passage_prefix.clone(),
                passages,
                ann: self.ann(),
            }),
            cache: self.cache.spec(),
        }
    }
}

/// `lmfuse index add`.
#[derive(Args, Debug)]
pub struct IndexAddArgs {
    /// The index folder.
    #[arg(long)]
    index: PathBuf,
    /// Documents to add (same layout as for build).
    #[arg(long)]
    corpus: PathBuf,
    #[command(flatten)]
    columns: CorpusArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `lmfuse index delete`.
#[derive(Args, Debug)]
pub struct IndexDeleteArgs {
    /// The index folder.
    #[arg(long)]
    index: PathBuf,
    /// Ids to delete, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// `lmfuse index info`.
#[derive(Args, Debug)]
pub struct IndexInfoArgs {
    /// The index folder.
    #[arg(long)]
    index: PathBuf,
}

/// Runs `lmfuse index ...`.
pub fn run_index(command: &IndexCommand, quiet: bool) -> anyhow::Result<()> {
    match command {
        IndexCommand::Build(args) => {
            let bars = Bars::new(quiet || args.json);
            let summary = retrieval::build_index(&args.out, &args.spec(), &bars)?;
            print_summary(&summary, args.json)
        }
        IndexCommand::Add(args) => {
            let bars = Bars::new(quiet || args.json);
            let add = (args.corpus.as_path(), None, &args.columns.columns());
            let summary = retrieval::update_index(
                &args.index,
                Some(add),
                Vec::new(),
                &args.cache.spec(),
                &bars,
            )?;
            print_summary(&summary, args.json)
        }
        IndexCommand::Delete(args) => {
            let no_cache = lmfuse_pipeline::encoders::CacheSpec::default();
            let summary = retrieval::update_index(
                &args.index,
                None,
                args.ids.clone(),
                &no_cache,
                &Bars::new(true),
            )?;
            print_summary(&summary, args.json)
        }
        IndexCommand::Info(args) => {
            let manifest = lmfuse_retrieval::read_manifest(&args.index)?;
            outln!("{}", serde_json::to_string_pretty(&manifest)?)?;
            Ok(())
        }
    }
}

fn print_summary(s: &IndexSummary, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string(s)?)?;
        return Ok(());
    }
    outln!(
        "{}: generation {}, {} documents, {} passages with vectors{} ({} added, {} deleted) in {:.1} s",
        s.index.display(),
        s.generation,
        s.documents,
        s.passages,
        if s.approximate { " and an HNSW graph" } else { "" },
        s.added,
        s.deleted,
        s.seconds
    )?;
    if let Some(e) = &s.embedding {
        outln!(
            "  encoded {} passages with {} ({} from the cache, {} cut at {} tokens)",
            e.count,
            e.model,
            e.cache_hits,
            e.truncated,
            e.max_seq_length
        )?;
    }
    Ok(())
}

/// How queries are answered, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// BM25 only.
    Bm25,
    /// Dense vectors only.
    Dense,
    /// Both, by reciprocal-rank fusion.
    Hybrid,
    /// Both, by a weighted sum of min-max normalised scores (--dense-weight).
    Weighted,
    /// The index's learned ranker (`search train-ranker`) over both sides' candidates.
    Learned,
}

/// Fusion settings shared by search and eval.
#[derive(Args, Debug, Clone)]
pub struct FusionArgs {
    /// RRF's constant for --mode hybrid.
    #[arg(long, default_value_t = fusion::RRF_K)]
    rrf_k: f32,
    /// The dense scores' weight for --mode weighted (BM25's is 1 minus it).
    #[arg(long, default_value_t = 0.5)]
    dense_weight: f32,
}

impl FusionArgs {
    fn mode(&self, mode: ModeArg) -> anyhow::Result<SearchMode> {
        let name = mode.to_possible_value().expect("no mode is skipped");
        retrieval::mode_named(name.get_name(), self.rrf_k, self.dense_weight)
            .context("--rrf-k or --dense-weight")
    }
}

/// A cross-encoder reranking of each search's best documents.
#[derive(Args, Debug, Clone)]
pub struct RerankArgs {
    /// Cross-encoder (a folder or a Hugging Face id such as
    /// cross-encoder/ms-marco-MiniLM-L6-v2) that rescores each query's best documents.
    #[arg(long, value_name = "MODEL")]
    rerank: Option<String>,
    /// Documents the cross-encoder rescores per query (at least -k).
    #[arg(long, default_value_t = 100, requires = "rerank")]
    rerank_depth: usize,
}

impl RerankArgs {
    /// Sets `searcher`'s cross-encoder, when one is asked for.
    fn apply(&self, searcher: &mut Searcher) -> anyhow::Result<()> {
        if let Some(model) = &self.rerank {
            searcher.set_reranker(Some(Reranker::open(model, self.rerank_depth)?));
        }
        Ok(())
    }
}

/// `lmfuse search`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SearchArgs {
    #[command(subcommand)]
    command: Option<SearchCommand>,
    /// The index folder.
    #[arg(long, required = true)]
    index: Option<PathBuf>,
    /// A query (repeat for several).
    #[arg(long, short)]
    query: Vec<String>,
    /// A file of queries (JSONL/CSV/TSV with id and text, or plain text, a query a line).
    #[arg(long, conflicts_with = "query")]
    queries: Option<PathBuf>,
    /// How to rank.
    #[arg(long, value_enum, default_value = "hybrid")]
    mode: ModeArg,
    /// Documents per query.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    fusion: FusionArgs,
    #[command(flatten)]
    rerank: RerankArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Output JSON Lines, one {"query", "hits"} per query; `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

/// `lmfuse search` subcommands.
#[derive(Subcommand, Debug)]
pub enum SearchCommand {
    /// Score an index on judged queries (BEIR layout): nDCG@10, MRR@10, Recall@100, MAP and
    /// per-query search time, for each mode side by side.
    Eval(SearchEvalArgs),
    /// Train a learned ranker on judged queries (a linear pairwise model or boosted trees
    /// over both retrievers' scores, chosen by cross-validation over the queries) and save it
    /// in the index folder for --mode learned.
    TrainRanker(TrainRankerArgs),
}

/// An index and judged queries.
#[derive(Args, Debug)]
pub struct JudgedArgs {
    /// The index folder.
    #[arg(long)]
    index: PathBuf,
    /// Queries: JSONL with id (or _id) and text.
    #[arg(long)]
    queries: PathBuf,
    /// Judgements: BEIR TSV (query-id, corpus-id, score) or TREC qrels; for train-ranker the
    /// training ones, never those you report.
    #[arg(long)]
    qrels: PathBuf,
}

/// `lmfuse search train-ranker`.
#[derive(Args, Debug)]
pub struct TrainRankerArgs {
    #[command(flatten)]
    judged: JudgedArgs,
    /// Candidates per retriever and query.
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Folds of the cross-validation over queries.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the folds and the trees.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn train_ranker(args: &TrainRankerArgs, quiet: bool) -> anyhow::Result<()> {
    let judged = &args.judged;
    let mut searcher = Searcher::open(&judged.index, &args.cache.spec())?;
    let spec = RankerSpec {
        queries: judged.queries.clone(),
        qrels: judged.qrels.clone(),
        depth: args.depth,
        folds: args.folds,
        kinds: RankerKind::defaults(args.seed),
        seed: args.seed,
    };
    let report =
        retrieval::train_index_ranker(&mut searcher, &spec, &Bars::new(quiet || args.json))?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    outln!(
        "{} queries, {} candidates ({} relevant; {} relevant documents out of reach)",
        report.queries,
        report.candidates,
        report.relevant,
        report.missed
    )?;
    for t in &report.tried {
        outln!(
            "  {:<60} cv nDCG@10 {:.2}",
            serde_json::to_string(&t.kind)?,
            100.0 * t.cv_ndcg
        )?;
    }
    outln!(
        "kept {}; saved in {}",
        serde_json::to_string(&report.kept)?,
        judged.index.join("ranker").display()
    )?;
    Ok(())
}

/// `lmfuse search eval`.
#[derive(Args, Debug)]
pub struct SearchEvalArgs {
    #[command(flatten)]
    judged: JudgedArgs,
    /// Modes to compare, comma-separated (default: all the index can answer).
    #[arg(long, value_enum, value_delimiter = ',')]
    modes: Vec<ModeArg>,
    /// Documents retrieved per query (the depth of MAP).
    #[arg(long, default_value_t = 100)]
    depth: usize,
    #[command(flatten)]
    fusion: FusionArgs,
    #[command(flatten)]
    rerank: RerankArgs,
    #[command(flatten)]
    cache: CacheArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `lmfuse search ...`.
pub fn run_search(args: &SearchArgs, quiet: bool) -> anyhow::Result<()> {
    match &args.command {
        Some(SearchCommand::Eval(eval)) => return run_eval(eval, quiet),
        Some(SearchCommand::TrainRanker(train)) => return train_ranker(train, quiet),
        None => {}
    }
    let index = args.index.as_ref().context("--index is required")?;
    let (ids, queries) = match &args.queries {
        Some(path) => read_query_file(path)?,
        None if args.query.is_empty() => anyhow::bail!("give --query TEXT or --queries FILE"),
        None => (None, args.query.clone()),
    };
    let mut searcher = Searcher::open(index, &args.cache.spec())?;
    args.rerank.apply(&mut searcher)?;
    let mode = args.fusion.mode(args.mode)?;
    let hits = searcher.search(&queries, mode, args.k, &Bars::new(quiet))?;
    let lines: Vec<serde_json::Value> = queries
        .iter()
        .zip(hits)
        .enumerate()
        .map(|(i, (q, h))| {
            let mut line = serde_json::json!({"query": q, "hits": h});
            if let Some(ids) = &ids {
                line["id"] = serde_json::json!(ids[i]);
            }
            line
        })
        .collect();
    write_lines(&args.output, &lines)
}

/// Queries from a file: ids and texts from JSONL/CSV/TSV, texts alone from plain text.
fn read_query_file(path: &std::path::Path) -> anyhow::Result<(Option<Vec<String>>, Vec<String>)> {
    if lmfuse_data::Format::from_path(path) == lmfuse_data::Format::Text {
        return Ok((None, lmfuse_data::read_texts(path, None, "text")?));
    }
    let queries = lmfuse_data::retrieval::read_queries(path, None, None, "text")?;
    let (ids, texts) = queries.into_iter().map(|q| (q.id, q.text)).unzip();
    Ok((Some(ids), texts))
}

fn run_eval(args: &SearchEvalArgs, quiet: bool) -> anyhow::Result<()> {
    let judged = &args.judged;
    let mut searcher = Searcher::open(&judged.index, &args.cache.spec())?;
    args.rerank.apply(&mut searcher)?;
    let has_vectors = searcher.index().manifest().spec.dense.is_some();
    let has_ranker = judged.index.join("ranker").join("manifest.json").is_file();
    let modes: Vec<ModeArg> = if args.modes.is_empty() && has_vectors {
        let mut all = vec![
            ModeArg::Bm25,
            ModeArg::Dense,
            ModeArg::Hybrid,
            ModeArg::Weighted,
        ];
        all.extend(has_ranker.then_some(ModeArg::Learned));
        all
    } else if args.modes.is_empty() {
        vec![ModeArg::Bm25]
    } else {
        args.modes.clone()
    };
    let spec = SearchEvalSpec {
        queries: judged.queries.clone(),
        qrels: judged.qrels.clone(),
        modes: modes
            .iter()
            .map(|&m| args.fusion.mode(m))
            .collect::<anyhow::Result<_>>()?,
        depth: args.depth,
        cut: 10,
        recall_depth: 100,
    };
    let report = retrieval::evaluate(&mut searcher, &spec, &Bars::new(quiet || args.json))?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    print_eval(&report, &modes)
}

fn print_eval(report: &SearchEvalReport, names: &[ModeArg]) -> anyhow::Result<()> {
    outln!(
        "{}: {} judged queries",
        report.index.display(),
        report.queries
    )?;
    if let Some(ms) = report.encode_ms_per_query {
        outln!("  query encoding: {ms:.2} ms a query (batched)")?;
    }
    if let Some(model) = &report.reranker {
        outln!("  every mode reranked by the cross-encoder {model} (its time included)")?;
    }
    outln!(
        "  {:<10} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "mode",
        "nDCG@10",
        "MRR@10",
        "Recall@100",
        "MAP",
        "p50 ms",
        "p95 ms"
    )?;
    for (row, name) in report.modes.iter().zip(names) {
        let s = &row.scores;
        outln!(
            "  {:<10} {:>8.2} {:>8.2} {:>10.2} {:>8.2} {:>8.3} {:>8.3}",
            format!("{name:?}").to_lowercase(),
            100.0 * s.ndcg,
            100.0 * s.mrr,
            100.0 * s.recall,
            100.0 * s.map,
            row.p50_ms,
            row.p95_ms
        )?;
    }
    Ok(())
}
